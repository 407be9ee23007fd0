"""Planner benchmarks: Solomon and Gehring-Homberger VRPTW instances, and city-sized days.

They print figures; they are not timed tests (see README.md here and docs/benchmarks.md).
"""
