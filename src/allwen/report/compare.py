"""``allwen compare``: one self-contained page and ``compare.json`` for runs side by side.

The numbers come from :func:`allwen.evaluation.compare.compare_runs`; this module only draws
the chart (each run's accuracy and kappa per matched headline model) and fills the template.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from allwen.evaluation.compare import GAP_METRICS, Comparison
from allwen.report import charts
from allwen.evaluation.metric_registry import label as metric_label
from allwen.report.format import fmt_ci, fmt_num
from allwen.report.render import render_html, svg_macro, write_utf8
from allwen.report.view import Cell, Row, Table

log = logging.getLogger(__name__)
RUN_COLOURS = ("#2563eb", "#dc2626", "#059669", "#d97706", "#7c3aed")


def _gap_cell(gap: Any) -> Cell:
    return Cell("n/a" if gap.value is None else f"{gap.value:+.3f}", sub=fmt_ci(gap.ci), numeric=True)


def run_names(comparison: Comparison) -> list[str]:
    """Each run by its protocol (``subject``, ``image``, ``sequence``); ``image 2`` when two runs share one."""
    protocols = [run.protocol or f"run {i + 1}" for i, run in enumerate(comparison.runs)]
    return [p if protocols.count(p) == 1 else f"{p} {protocols[:i + 1].count(p)}" for i, p in enumerate(protocols)]


def comparison_table(comparison: Comparison, groups: tuple[str, ...]) -> Table:
    """Per matched model: each run's accuracy, kappa and AUC with intervals, then each gap."""
    labels = run_names(comparison)
    headers = ["Model"]
    for key in ("accuracy", "kappa", "auc"):
        headers += [f"{metric_label(key)} ({side})" for side in labels]
        headers += [f"{metric_label(key)} gap ({side} - {labels[0]})" for side in labels[1:]]
    rows = []
    for row in comparison.rows:
        if row.group not in groups:
            continue
        own = [] if set(row.names) == {row.key} else [f"{labels[i]}: {name}" for i, name in enumerate(row.names)]
        cells = [Cell(row.key, lines=own)]
        for key in ("accuracy", "kappa", "auc"):
            cells += [Cell(fmt_num(side.value), sub=fmt_ci(side.ci), numeric=True) for side in row.metrics[key]]
            cells += [_gap_cell(g) for g in row.gaps[key]]
        rows.append(Row(cells, "best" if row.key == "best single model" else None))
    return Table(headers, rows)


def _chart(comparison: Comparison) -> str:
    names = run_names(comparison)
    rows = []
    for row in (r for r in comparison.rows if r.group in ("headline", "champion")):
        for i, run in enumerate(comparison.runs):
            values = {}
            for key in ("accuracy", "kappa"):
                side = row.metrics[key][i]
                ci = side.ci or (None, None)
                values[key] = (side.value, ci[0], ci[1])
            rows.append(charts.ForestRow(f"{row.key} · {names[i]}", "run", values, RUN_COLOURS[i % len(RUN_COLOURS)]))
    legend = [(f"{names[i]}: {run.label}", RUN_COLOURS[i % len(RUN_COLOURS)]) for i, run in enumerate(comparison.runs)]
    return svg_macro("forest", charts.forest(rows, [("accuracy", "test accuracy"), ("kappa", "test kappa")],
                                             legend=legend))


def write_comparison(comparison: Comparison, out_dir: Path) -> Path:
    """Write ``OUT/compare.json`` and ``OUT/index.html``; return the page."""
    out_dir = Path(out_dir)
    write_utf8(out_dir / "compare.json", comparison.model_dump_json(indent=1))
    links = [Path(os.path.relpath(Path(run.report).resolve(), out_dir.resolve())).as_posix() for run in comparison.runs]
    headline = next((r for r in comparison.rows if r.key == "best single model"), None)
    page = render_html(
        "compare.html.j2", comparison=comparison, chart=_chart(comparison), headline=headline,
        metrics=GAP_METRICS, labels={key: metric_label(key) for key in GAP_METRICS}, links=links, names=run_names(comparison),
        headline_table=comparison_table(comparison, ("headline", "champion")),
        all_table=comparison_table(comparison, ("single", "ensemble")),
    )
    index = write_utf8(out_dir / "index.html", page)
    log.info("comparison written to %s", index)
    return index
