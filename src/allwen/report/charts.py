"""The report's charts as geometry for SVG templates: forest plot, ROC curves, confusion shading.

Nothing here computes a metric: values, intervals, ROC points and confusion counts come from
``summary.json``, so a chart can never disagree with the tables beside it. Charts are drawn
by ``templates/charts.svg.j2`` rather than matplotlib: importing and drawing with matplotlib
took more than the whole 2-second budget of ``allwen report`` (see the README's choices).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Sequence

if TYPE_CHECKING:
    from allwen.evaluation.results import Roc

COLOURS = {"best single": "#111827", "single": "#9ca3af", "champion": "#2563eb", "inter": "#059669",
           "intra": "#d97706", "scenarios": "#7c3aed"}
PALETTE = ("#2563eb", "#d97706", "#059669", "#dc2626", "#7c3aed", "#0891b2", "#be185d", "#65a30d", "#9333ea")


def nice_ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    """Round tick values covering [lo, hi] (steps of 1, 2 or 5 x 10^k)."""
    if hi <= lo:
        hi = lo + 1e-3
    raw = (hi - lo) / n
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 5, 10) if m * magnitude >= raw)
    start = math.ceil(lo / step) * step
    return [round(start + i * step, 10) for i in range(int((hi - start) / step + 1e-9) + 1)]


@dataclass(frozen=True)
class ForestRow:
    """One model: label, group (colour) and per-metric (value, lo, hi); None when undefined."""

    label: str
    group: str
    values: dict[str, tuple[float | None, float | None, float | None]]
    colour: str | None = None  # overrides the group's colour (e.g. one colour per run)

    @property
    def ink(self) -> str:
        return self.colour or COLOURS.get(self.group, "#374151")


@dataclass
class Panel:
    """One metric's column of the forest plot, in pixels."""

    title: str
    x0: float
    width: float
    lo: float
    hi: float
    ticks: list[tuple[float, str]] = field(default_factory=list)
    marks: list[dict[str, Any]] = field(default_factory=list)
    reference: float | None = None

    def x(self, value: float) -> float:
        return self.x0 + (value - self.lo) / (self.hi - self.lo) * self.width


@dataclass
class Forest:
    width: int
    height: int
    top: int
    row_height: int
    labels: list[dict[str, Any]]
    panels: list[Panel]
    legend: list[tuple[str, str, float]]  # name, colour, x


def forest(rows: Sequence[ForestRow], metrics: Sequence[tuple[str, str]], reference: float | None = None,
           width: int = 1060, row_height: int = 15, legend: list[tuple[str, str]] | None = None) -> Forest:
    """Lay out a forest plot: a label column, then one panel per metric; rows top to bottom.

    The legend lists the groups present (their colours) unless ``legend`` is given.
    """
    label_width = min(330, 14 + 6 * max((len(r.label) for r in rows), default=10))
    top, gap = 42, 24
    panel_width = (width - label_width - gap * len(metrics)) / len(metrics)
    panels = []
    for i, (key, title) in enumerate(metrics):
        bounds = [v for r in rows for v in r.values[key] if v is not None]
        lo, hi = (min(bounds), max(bounds)) if bounds else (0.0, 1.0)
        pad = max(0.01, 0.05 * (hi - lo))
        panel = Panel(title, label_width + i * (panel_width + gap), panel_width, lo - pad, hi + pad)
        panel.ticks = [(panel.x(t), f"{t:g}") for t in nice_ticks(panel.lo, panel.hi)]
        if reference is not None and i == 0:
            panel.reference = panel.x(reference)
        for j, r in enumerate(rows):
            value, low, high = r.values[key]
            if value is None:
                continue
            panel.marks.append({"y": top + (j + 0.5) * row_height, "x": panel.x(value), "colour": r.ink,
                                "x_lo": panel.x(low if low is not None else value),
                                "x_hi": panel.x(high if high is not None else value),
                                "title": f"{r.label}: {value:.3f}" + (f" [{low:.3f}, {high:.3f}]" if low is not None and high is not None else "")})
        panels.append(panel)
    labels = [{"y": top + (j + 0.5) * row_height, "text": r.label, "colour": r.ink,
               "bold": r.group == "best single"} for j, r in enumerate(rows)]
    if legend is None:
        legend = [(g, COLOURS[g]) for g in COLOURS if any(r.group == g for r in rows)]
    placed, x = [], 10.0
    for name, colour in legend:  # legend entries side by side, each as wide as its text
        placed.append((name, colour, x))
        x += 28 + 6.2 * len(name)
    return Forest(width, top + len(rows) * row_height + 30, top, row_height, labels, panels, placed)


@dataclass
class RocPanel:
    title: str
    size: int
    curves: list[dict[str, Any]]
    ticks: list[tuple[float, str]]


def roc_panels(entries: Sequence[tuple[str, Roc, bool]], size: int = 380) -> list[RocPanel]:
    """One panel (binary) or one per class (multi-class, ``Roc.per_class``); curves as SVG points."""
    classes: dict[str, None] = {}
    for _, roc, _ in entries:
        classes.update(dict.fromkeys(roc.per_class))
    panels = [(f"{c} vs rest", [(label, roc.per_class.get(c), ref) for label, roc, ref in entries])
              for c in classes] or [("ROC", [(label, roc.curves().get("positive"), ref) for label, roc, ref in entries])]
    out = []
    for title, curves in panels:
        drawn = []
        for i, (label, curve, ref) in enumerate(c for c in curves if c[1] is not None and c[1].fpr):
            points = " ".join(f"{f * size:.1f},{(1 - t) * size:.1f}" for f, t in zip(curve.fpr, curve.tpr))
            drawn.append({"label": f"{label} (AUC {curve.auc:.3f})", "points": points, "reference": ref,
                          "colour": "#111827" if ref else PALETTE[i % len(PALETTE)]})
        out.append(RocPanel(title, size, drawn, [(t * size, f"{t:g}") for t in (0, 0.25, 0.5, 0.75, 1.0)]))
    return out


@dataclass
class CoveragePanel:
    """Accuracy on answered images against coverage, one curve per model, the chosen threshold marked."""

    title: str
    size: int
    lo: float
    curves: list[dict[str, Any]]
    x_ticks: list[tuple[float, str]]
    y_ticks: list[tuple[float, str]]
    target_y: float | None


def coverage_panel(entries: Sequence[tuple[str, Sequence[dict[str, float]], dict[str, Any] | None]],
                   target: float | None, size: int = 380) -> CoveragePanel:
    """Layout of accuracy-coverage curves (``entries``: label, curve points, chosen point or None)."""
    accs = [pt["accuracy"] for _, pts, _ in entries for pt in pts] + ([target] if target is not None else [])
    ticks = nice_ticks(min(accs, default=0.5) - 0.01, 1.0, 4)
    lo = min(ticks[0], min(accs, default=0.5) - 0.01)

    def y(v: float) -> float:
        return (1.0 - (v - lo) / (1.0 - lo)) * size

    curves = []
    for i, (label, pts, chosen) in enumerate(entries):
        mark = None
        if chosen and chosen.get("accuracy") is not None:
            mark = {"x": chosen["coverage"] * size, "y": y(chosen["accuracy"]),
                    "text": f"{label}: coverage {chosen['coverage']:.3f}, accuracy {chosen['accuracy']:.3f}"}
        curves.append({"label": label, "colour": PALETTE[i % len(PALETTE)], "mark": mark,
                       "points": " ".join(f"{pt['coverage'] * size:.1f},{y(pt['accuracy']):.1f}" for pt in pts)})
    return CoveragePanel("accuracy on answered test images vs coverage", size, lo, curves,
                         [(t * size, f"{t:g}") for t in (0, 0.25, 0.5, 0.75, 1.0)],
                         [(y(t), f"{t:g}") for t in ticks if lo <= t <= 1.0],
                         None if target is None else y(target))


def shade(rate: float) -> str:
    """Background of a confusion cell: white to blue by the row share."""
    r, g, b = (int(255 - (255 - c) * rate) for c in (29, 78, 216))
    return f"rgb({r},{g},{b})"


def confusion_view(matrix: list[list[int]], classes: Sequence[str]) -> list[list[dict[str, Any]]]:
    """Rows of cells with the count, the row share and its shade (colour = recall per true class)."""
    out = []
    for row in matrix:
        total = sum(row)
        cells = []
        for count in row:
            rate = count / total if total else 0.0
            cells.append({"count": count, "rate": rate, "bg": shade(rate), "fg": "#fff" if rate > 0.55 else "#1f2937"})
        out.append(cells)
    return out


@dataclass
class LineChart:
    """Values at x positions, one polyline per series over ordered numbers; dots alone over
    categories (backbones, optimizers), where a line between them would suggest an order."""

    title: str
    width: int
    height: int
    left: int
    top: int
    plot_w: int
    plot_h: int
    x_label: str
    y_label: str
    x_ticks: list[tuple[float, str]]
    y_ticks: list[tuple[float, str]]
    series: list[dict[str, Any]]
    kind: str = "lines"  # "dots" (categories), or "bars": grouped bars (macro ``lines`` draws all three)


def bars(title: str, x_values: Sequence[Any], series: Sequence[tuple[str, Sequence[float | None]]],
         x_label: str, y_label: str, width: int = 420, height: int = 260) -> LineChart:
    """Grouped bars at categorical x positions (Experiment B: train and validation accuracy per setting)."""
    chart = lines(title, x_values, series, x_label, y_label, width, height)
    slot = chart.plot_w / max(1, len(x_values))
    bar_w = slot * 0.8 / max(1, len(chart.series))
    base = chart.top + chart.plot_h
    for j, entry in enumerate(chart.series):
        entry["bars"] = [(x - slot * 0.4 + j * bar_w, y, bar_w, base - y, label) for x, y, label in entry["marks"]]
    chart.kind = "bars"
    return chart


def lines(title: str, x_values: Sequence[Any], series: Sequence[tuple[str, Sequence[float | None]]],
          x_label: str, y_label: str, width: int = 420, height: int = 260) -> LineChart:
    """Geometry of a line chart; a None value leaves a gap (no point drawn). Categorical x values
    get dots without lines; the chart widens until every x label fits beside its neighbours."""
    left, top, bottom = 48, 26, 42 + 14 * len(series)
    n = max(1, len(x_values))
    longest = max((len(str(x)) for x in x_values), default=1)
    width = max(width, left + 12 + n * (6 * longest + 16))  # ~6 px a character at the ticks' 10 px font
    plot_w, plot_h = width - left - 12, height - top - 42
    values = [v for _, ys in series for v in ys if v is not None]
    lo, hi = (min(values), max(values)) if values else (0.0, 1.0)
    pad = max(1e-3, (hi - lo) * 0.1)
    ticks = nice_ticks(lo - pad, hi + pad, 4)
    lo, hi = min(ticks[0], lo - pad), max(ticks[-1], hi + pad)

    def px(i: int) -> float:
        return left + (i + 0.5) * plot_w / n

    def py(v: float) -> float:
        return top + plot_h - (v - lo) / (hi - lo) * plot_h

    out = []
    for k, (label, ys) in enumerate(series):
        pts = [(px(i), py(v), f"{label} · {x_values[i]}: {v:.4f}") for i, v in enumerate(ys) if v is not None]
        out.append({"label": label, "colour": PALETTE[k % len(PALETTE)], "marks": pts,
                    "points": " ".join(f"{x:.1f},{y:.1f}" for x, y, _ in pts)})
    numeric = all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in x_values)
    return LineChart(title, width, height + bottom - 42, left, top, plot_w, plot_h, x_label, y_label,
                     [(px(i), str(x)) for i, x in enumerate(x_values)],
                     [(py(t), f"{t:g}") for t in ticks if lo <= t <= hi], out, "lines" if numeric else "dots")
