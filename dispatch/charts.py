"""Small server-rendered SVG charts: geometry computed here, drawn by templates/dispatch/_chart.html.

No JS and no inline styles (the CSP forbids them): colours travel as SVG presentation
attributes. Every chart keeps its numbers (`table`) so the page can show them beside it.
"""

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

WIDTH, HEIGHT = 640, 240
LEFT, RIGHT, TOP, BOTTOM = 44, 12, 12, 40
MAX_X_LABELS = 14


@dataclass(frozen=True)
class Series:
    name: str
    colour: str
    values: Sequence[float | None]


@dataclass
class Chart:
    title: str
    unit: str
    labels: list[str]
    series: list[Series]
    width: int = WIDTH
    height: int = HEIGHT
    bars: list[dict] = field(default_factory=list)
    lines: list[dict] = field(default_factory=list)
    dots: list[dict] = field(default_factory=list)
    x_labels: list[dict] = field(default_factory=list)
    y_ticks: list[dict] = field(default_factory=list)

    @property
    def plot(self) -> dict:
        return {"left": LEFT, "right": self.width - RIGHT, "top": TOP, "bottom": self.height - BOTTOM}

    @property
    def empty(self) -> bool:
        return not any(v for s in self.series for v in s.values if v is not None)

    @property
    def table(self) -> list[dict]:
        """One row per label: {"label", "values": [value per series]} for the numbers table."""
        return [
            {"label": label, "values": [s.values[i] for s in self.series]}
            for i, label in enumerate(self.labels)
        ]


def nice_max(value: float) -> float:
    """The smallest of 1, 2, 2.5, 5 × 10^k at or above `value` (a round top for the y axis)."""
    if value <= 0:
        return 1.0
    exponent = math.floor(math.log10(value))
    for step in (1, 2, 2.5, 5, 10):
        top = step * 10**exponent
        if top >= value - 1e-9:
            return float(top)
    return float(10 ** (exponent + 1))


def _format(value: float, unit: str) -> str:
    text = f"{value:.0f}" if float(value).is_integer() else f"{value:.1f}"
    return f"{text}{unit}"


def _axes(chart: Chart, y_max: float) -> tuple[float, float]:
    """Fill x labels and y ticks; return (slot width, y scale in pixels per unit)."""
    plot = chart.plot
    n = max(1, len(chart.labels))
    slot = (plot["right"] - plot["left"]) / n
    scale = (plot["bottom"] - plot["top"]) / y_max
    every = max(1, math.ceil(n / MAX_X_LABELS))
    chart.x_labels = [
        {"x": round(plot["left"] + slot * (i + 0.5), 1), "y": plot["bottom"] + 16, "text": label}
        for i, label in enumerate(chart.labels)
        if i % every == 0
    ]
    chart.y_ticks = [
        {"y": round(plot["bottom"] - y_max * k / 4 * scale, 1), "text": _format(y_max * k / 4, chart.unit)}
        for k in range(5)
    ]
    return slot, scale


def bar_chart(*, title: str, labels: Sequence[str], series: Sequence[Series], unit: str = "") -> Chart:
    """Stacked bars, one per label; series stack bottom-up in the order given."""
    chart = Chart(title=title, unit=unit, labels=list(labels), series=list(series))
    totals = [sum(s.values[i] or 0 for s in series) for i in range(len(labels))]
    slot, scale = _axes(chart, nice_max(max(totals, default=0)))
    bottom = chart.plot["bottom"]
    width = max(1.0, slot * 0.72)
    for i, label in enumerate(labels):
        base = 0.0
        for s in series:
            value = s.values[i] or 0
            if value <= 0:
                continue
            chart.bars.append(
                {
                    "x": round(chart.plot["left"] + slot * i + (slot - width) / 2, 1),
                    "y": round(bottom - (base + value) * scale, 1),
                    "width": round(width, 1),
                    "height": round(value * scale, 1),
                    "colour": s.colour,
                    "title": f"{label}: {_format(value, unit)} {s.name}",
                }
            )
            base += value
    return chart


def line_chart(
    *, title: str, labels: Sequence[str], series: Sequence[Series], unit: str = "%", y_max: float = 100
) -> Chart:
    """Lines over the labels; a None value leaves a gap (no data that day), not a zero."""
    chart = Chart(title=title, unit=unit, labels=list(labels), series=list(series))
    slot, scale = _axes(chart, y_max)
    left, bottom = chart.plot["left"], chart.plot["bottom"]
    for s in series:
        segment: list[str] = []
        for i, value in enumerate(list(s.values) + [None]):
            if value is None:
                if segment:
                    chart.lines.append({"points": " ".join(segment), "colour": s.colour})
                segment = []
                continue
            x, y = round(left + slot * (i + 0.5), 1), round(bottom - min(value, y_max) * scale, 1)
            segment.append(f"{x},{y}")
            chart.dots.append(
                {"x": x, "y": y, "colour": s.colour, "title": f"{labels[i]}: {_format(value, unit)} {s.name}"}
            )
    return chart
