"""The report's view: the typed blocks a report is made of, built only from the results model.

A report is a :class:`Document` of :class:`Section` s holding blocks (tables, texts, items,
figures, charts, confusion matrices); :mod:`allwen.report.sections` and
:mod:`allwen.report.answers` build them from a :class:`~allwen.evaluation.results.Summary`,
:mod:`allwen.report.render` turns them into HTML and Markdown. The blocks hold text, no
numbers to compute, so both renderings always say the same thing.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from allwen.evaluation.metric_registry import fmt
from allwen.evaluation.results import Metrics
from allwen.report.format import fmt_ci


@dataclass
class Cell:
    """A table cell: main text, an optional interval under it and optional small lines; a badge is
    ``ok`` (green: best, winner, within) or ``warn`` (amber: a mismatch a reader should see)."""

    text: str
    sub: str | None = None
    lines: Sequence[str] = ()
    numeric: bool = False
    badge: str | None = None
    badge_level: str = "ok"


@dataclass
class Row:
    cells: list[Cell]
    cls: str | None = None


@dataclass
class Table:
    headers: list[str]
    rows: list[Row]
    caption: str | None = None
    kind: str = "table"

    def align(self, i: int) -> str:
        return "---:" if any(r.cells[i].numeric for r in self.rows if i < len(r.cells)) else "---"


@dataclass
class Text:
    """``para``, ``heading``, ``pre`` or a ``callout`` (level warn | error | info)."""

    text: str
    kind: str = "para"
    level: str = "info"

    @property
    def label(self) -> str:
        return "Warning" if self.level == "error" else "Note"


@dataclass
class Items:
    """``bullets`` (strings) or ``kv`` (label, value pairs)."""

    items: list[Any]
    kind: str = "bullets"


@dataclass
class Fig:
    """A PNG on disk (embedded in HTML) and the relative path Markdown links to."""

    path: Path | None
    md_path: str
    caption: str
    kind: str = "figure"

    @property
    def data_uri(self) -> str | None:
        if self.path is None or not self.path.is_file():
            return None
        return "data:image/png;base64," + base64.b64encode(self.path.read_bytes()).decode("ascii")


@dataclass
class Chart:
    """An SVG drawn by ``charts.svg.j2``: inline in HTML, a file in ``figures/`` for Markdown."""

    svg: str
    md_path: str
    caption: str
    kind: str = "chart"


@dataclass
class Confusions:
    """Confusion matrices as shaded tables: (title, class names, rows of cells)."""

    items: list[tuple[str, list[str], list[list[dict[str, Any]]]]]
    kind: str = "confusions"


@dataclass
class Gallery:
    figures: list[Fig]
    kind: str = "gallery"


@dataclass
class Section:
    id: str
    title: str
    blocks: list[Any] = field(default_factory=list)
    folded: bool = True


@dataclass
class Document:
    title: str
    meta: str
    callouts: list[Text]
    answers: Section
    headline: list[Any]
    sections: list[Section]
    footer: list[str]


def metric_cell(metrics: Metrics, key: str, warnings: Sequence[Any] = ()) -> Cell:
    """A metric with its interval, and a mark naming each statistics warning that affects it."""
    marks = [f"! {w.kind.replace('_', ' ')}" for w in warnings]
    sub = fmt_ci(metrics.interval(key))
    if sub is None and any(w.kind == "one_cluster" for w in warnings):
        sub = "no interval"
    return Cell(fmt(key, metrics.value(key)), sub=sub, numeric=True, lines=marks)


__all__ = ["Cell", "Chart", "Confusions", "Document", "Fig", "Gallery", "Items", "Row", "Section", "Table", "Text",
           "metric_cell"]
