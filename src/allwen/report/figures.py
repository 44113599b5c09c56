"""Report figures drawn from the numbers already in summary.json.

Nothing here computes a metric: ROC points, AUCs and confusion counts come from the
evaluation step, so a figure can never disagree with the tables beside it.
"""

from __future__ import annotations

import logging
import math
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import matplotlib
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from allwen.io import atomic_write

log = logging.getLogger(__name__)

DPI = 110
_PALETTE = tuple(matplotlib.colormaps["tab10"].colors) + tuple(matplotlib.colormaps["Dark2"].colors)


@dataclass(frozen=True)
class RocEntry:
    """One model's ROC as stored in summary.json, with how to draw it."""

    label: str
    roc: dict[str, Any]
    emphasis: bool = False  # the reference curve (best single model): black and dashed


def _new_figure(rows: int, cols: int, width: float, height: float) -> tuple[Figure, np.ndarray]:
    """An Agg-backed figure outside pyplot: no global backend switch, no figure registry."""
    fig = Figure(figsize=(width * cols, height * rows))
    FigureCanvasAgg(fig)
    return fig, fig.subplots(rows, cols, squeeze=False)


def _save(fig: Figure, path: Path) -> Path:
    """Save atomically so an interrupted build never leaves a truncated PNG behind."""
    fig.tight_layout()

    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=DPI, bbox_inches="tight"))
    log.debug("wrote %s", path)
    return path


def _points(roc: dict[str, Any] | None) -> tuple[list[float], list[float]] | None:
    """(fpr, tpr) when both are present and the same non-zero length, else None."""
    if not isinstance(roc, dict):
        return None
    fpr, tpr = roc.get("fpr"), roc.get("tpr")
    if not isinstance(fpr, list) or not isinstance(tpr, list) or not fpr or len(fpr) != len(tpr):
        return None
    return fpr, tpr


def _auc_text(value: Any) -> str:
    return f"{value:.3f}" if isinstance(value, (int, float)) and math.isfinite(value) else "n/a"


def _roc_classes(entries: Sequence[RocEntry]) -> list[str]:
    """Class names that carry a per-class curve in any entry (multi-class runs)."""
    seen: dict[str, None] = {}
    for entry in entries:
        per_class = entry.roc.get("per_class") if isinstance(entry.roc, dict) else None
        if isinstance(per_class, dict):
            seen.update(dict.fromkeys(per_class))
    return list(seen)


def _draw_roc_axis(ax: Any, curves: Sequence[tuple[str, dict[str, Any] | None, bool]], title: str) -> int:
    """Draw the chance line and every curve that has points; return how many were drawn."""
    ax.plot([0, 1], [0, 1], color="#bbbbbb", lw=0.8, ls=":")
    drawn = 0
    colour_index = 0
    for label, roc, emphasis in curves:
        points = _points(roc)
        if points is None:
            continue
        auc = _auc_text(roc.get("auc") if roc else None)
        if emphasis:
            style = {"color": "black", "lw": 2.0, "ls": "--", "zorder": 5}
        else:
            style = {"color": _PALETTE[colour_index % len(_PALETTE)], "lw": 1.3}
            colour_index += 1
        ax.plot(points[0], points[1], label=f"{label} (AUC {auc})", **style)
        drawn += 1
    ax.set_xlim(-0.01, 1.01)
    ax.set_ylim(-0.01, 1.01)
    ax.set_aspect("equal")
    ax.set_xlabel("false positive rate", fontsize=8)
    ax.set_ylabel("true positive rate", fontsize=8)
    ax.tick_params(labelsize=7)
    ax.grid(alpha=0.25, lw=0.5)
    ax.set_title(_wrap(title, 48), fontsize=9)
    if drawn:
        ax.legend(fontsize=6.5, loc="lower right", framealpha=0.85)
    else:
        ax.text(0.5, 0.5, "no ROC points (n/a)", ha="center", va="center", fontsize=9, color="#777777")
    return drawn


def _wrap(text: str, width: int) -> str:
    return "\n".join(textwrap.wrap(text, width)) or text


def _grid(n: int, max_cols: int) -> tuple[int, int]:
    cols = max(1, min(n, max_cols))
    return math.ceil(n / cols), cols


def roc_overlay(entries: Sequence[RocEntry], path: Path, title: str) -> Path | None:
    """Overlay ROC curves: one panel when binary, one panel per class when multi-class.

    Returns None (and draws nothing) when no entry has points, so the report says n/a
    instead of embedding an empty chart.
    """
    entries = [e for e in entries if isinstance(e.roc, dict)]
    classes = _roc_classes(entries)
    if classes:
        panels = [
            (f"{name} vs rest",
             [(e.label, (e.roc.get("per_class") or {}).get(name), e.emphasis) for e in entries])
            for name in classes
        ]
    else:
        panels = [(title, [(e.label, e.roc, e.emphasis) for e in entries])]
    if not any(_points(roc) for _, curves in panels for _, roc, _ in curves):
        return None
    rows, cols = _grid(len(panels), 2)
    fig, axes = _new_figure(rows, cols, 5.4, 5.0)
    for ax, (panel_title, curves) in zip(axes.flat, panels):
        _draw_roc_axis(ax, curves, panel_title)
    for ax in list(axes.flat)[len(panels):]:
        ax.set_visible(False)
    if classes:
        fig.suptitle(_wrap(title, 90), fontsize=10)
    return _save(fig, path)


def roc_grid(groups: dict[str, Sequence[RocEntry]], path: Path) -> Path | None:
    """One small binary-ROC panel per group (e.g. per weighting), to keep each legible."""
    groups = {k: v for k, v in groups.items() if any(_points(e.roc) for e in v)}
    if not groups:
        return None
    rows, cols = _grid(len(groups), 3)
    fig, axes = _new_figure(rows, cols, 4.2, 4.0)
    for ax, (group_title, entries) in zip(axes.flat, groups.items()):
        _draw_roc_axis(ax, [(e.label, e.roc, e.emphasis) for e in entries], group_title)
    for ax in list(axes.flat)[len(groups):]:
        ax.set_visible(False)
    return _save(fig, path)


def _valid_matrix(matrix: Any) -> np.ndarray | None:
    try:
        array = np.asarray(matrix, dtype=float)
    except (TypeError, ValueError):
        return None
    if array.ndim != 2 or array.shape[0] != array.shape[1] or array.size == 0:
        return None
    return array


def confusion_grid(
    matrices: Sequence[tuple[str, Any]], classes: Sequence[str], path: Path, max_cols: int = 4
) -> Path | None:
    """Small multiples of confusion matrices with counts annotated.

    Colour is the row-normalised rate (recall per true class) so panels with different
    class balance stay comparable; the numbers printed are the raw counts.
    """
    valid = [(title, m) for title, m in ((t, _valid_matrix(m)) for t, m in matrices) if m is not None]
    if not valid:
        return None
    size = max(m.shape[0] for _, m in valid)
    panel = 2.5 if size <= 2 else 2.5 + 0.35 * (size - 2)
    rows, cols = _grid(len(valid), max_cols)
    fig, axes = _new_figure(rows, cols, panel, panel + 0.35)
    for ax, (title, counts) in zip(axes.flat, valid):
        n = counts.shape[0]
        names = list(classes) if len(classes) == n else [str(i) for i in range(n)]
        totals = counts.sum(axis=1, keepdims=True)
        rates = np.divide(counts, totals, out=np.zeros_like(counts), where=totals > 0)
        ax.imshow(rates, cmap="Blues", vmin=0.0, vmax=1.0)
        for i in range(n):
            for j in range(n):
                ax.text(j, i, f"{int(round(counts[i, j]))}", ha="center", va="center",
                        fontsize=8 if n <= 4 else 6,
                        color="white" if rates[i, j] > 0.55 else "#1f2937")
        ax.set_xticks(range(n), [_wrap(s, 10) for s in names], fontsize=6.5)
        ax.set_yticks(range(n), [_wrap(s, 10) for s in names], fontsize=6.5)
        ax.set_xlabel("predicted", fontsize=7)
        ax.set_ylabel("true", fontsize=7)
        ax.set_title(_wrap(title, 30), fontsize=7.5)
    for ax in list(axes.flat)[len(valid):]:
        ax.set_visible(False)
    return _save(fig, path)


__all__ = ["RocEntry", "confusion_grid", "roc_grid", "roc_overlay"]
