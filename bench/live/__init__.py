"""Live-data benchmarks: GPS ingest, the ratio to a bare view, the sustained mix, the dashboard."""
