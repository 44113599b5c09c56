"""The paper's headline numbers beside this run's (``paper_comparison`` in ``summary.json``).

A preset's ``paper:`` block names the numbers its study reported; here each becomes one fact:
the paper's value, this run's value of the same metric for the model the block names (the best
single model, the most accurate ensemble, the grid cell the paper reported, the same cell's
per-fold range, or a named ensemble), the run's interval and whether the paper's value
lies inside it. The protocol facts that make the two differ (split level, where the reported
model was chosen, the averaging of precision/recall/F1, the test-set size) are recorded beside
them; the report words both.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from allwen.evaluation.results import PaperComparison, PaperProtocol, ProtocolAspect

if TYPE_CHECKING:
    from allwen.config import Config
    from allwen.evaluation.results import ModelResult, Summary


def _same(a: object, b: object) -> bool:
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool):
        return math.isclose(float(a), float(b), rel_tol=1e-9)
    return a == b


def reported_cell(summary: Summary, cell: dict) -> str | None:
    """The run's scenario whose settings are the paper's reported cell (None: no such cell ran)."""
    for scenario in summary.scenarios:
        if cell and all(k in scenario.settings and _same(scenario.settings[k], v) for k, v in cell.items()):
            return scenario.name
    return None


def _cell_model(summary: Summary, scenario: str) -> ModelResult:
    """The cell's one unit, or (several folds) the cell's champion."""
    for champion in summary.champions:
        if champion.scenario == scenario:
            return champion
    return summary.units_of(scenario)[0]


def _named_ensemble(summary: Summary, spec: dict) -> ModelResult | None:
    for e in summary.ensembles:
        if all(getattr(e, k, None) == v for k, v in spec.items()):
            return e
    return None


def _compared_model(summary: Summary, compare_to: str, paper=None) -> ModelResult:
    if compare_to in ("cell", "fold_range") and paper is not None:
        cell = reported_cell(summary, paper.cell)
        if cell is not None:
            return _cell_model(summary, cell)
    if compare_to == "ensemble" and paper is not None:
        named = _named_ensemble(summary, paper.ensemble)
        if named is not None:
            return named
    if compare_to == "best_ensemble" and summary.best_ensembles:
        names = list(summary.best_ensembles.values())
        return max((summary.model(n) for n in names), key=lambda m: m.metrics.accuracy or 0.0)
    return summary.model(summary.best_single)


def _run_split(cfg: Config) -> str:
    return "official" if cfg.split.test == "official" else cfg.split.group_by


def _run_selection(cfg: Config, summary: Summary) -> str:
    return "test" if summary.selection.test_set_selection else "validation"


def paper_facts(cfg: Config, summary: Summary) -> tuple[list[PaperComparison], PaperProtocol | None]:
    """``(paper_comparison, paper_protocol)`` for a config with a ``paper:`` block, else ``([], None)``."""
    paper = cfg.paper
    if paper is None:
        return [], None
    model = _compared_model(summary, paper.compare_to, paper)
    cell = reported_cell(summary, paper.cell) if paper.compare_to in ("cell", "fold_range") else None
    folds = summary.units_of(cell) if cell is not None and paper.compare_to == "fold_range" else []
    rows = []
    for number in paper.numbers:
        if folds:  # the paper's range over its folds beside this run's range over the same cell's folds
            values = [m.metrics.value(number.metric) for m in folds]
            finite_values = [v for v in values if v is not None and math.isfinite(v)]
            basis = number.fold or "mean"
            pick = {"lowest": min, "highest": max, "mean": lambda v: sum(v) / len(v)}[basis]
            value = pick(finite_values) if finite_values else None
            low, high = (min(finite_values), max(finite_values)) if finite_values else (None, None)
            chosen = model.name if basis == "mean" else next(
                (m.name for m, v in zip(folds, values) if v == value), model.name)
            rows.append(PaperComparison(
                metric=number.metric, paper=number.value, run=value, low=low, high=high,
                inside=None if low is None else bool(low <= number.value <= high), model=chosen, where=number.where,
                note=number.note, basis=f"{basis} of {len(folds)} folds of {cell}", fold_values=values))
            continue
        value = model.metrics.value(number.metric)
        low, high = model.metrics.interval(number.metric) or (None, None)
        inside = None if low is None or high is None else bool(low <= number.value <= high)
        rows.append(PaperComparison(metric=number.metric, paper=number.value, run=value, low=low, high=high,
                                    inside=inside, model=model.name, where=number.where, note=number.note))
    aspects = [
        ProtocolAspect(aspect="split", paper=paper.split, run=_run_split(cfg)),
        ProtocolAspect(aspect="selected_on", paper=paper.selected_on, run=_run_selection(cfg, summary)),
        ProtocolAspect(aspect="average", paper=paper.average, run=summary.average or "binary"),
        ProtocolAspect(aspect="test_images", paper=str(paper.test_images) if paper.test_images else "unstated",
                       run=str(summary.evaluation.n_test)),
    ]
    for aspect in aspects:
        aspect.same = aspect.paper == aspect.run
    return rows, PaperProtocol(citation=paper.citation, model=model.name, compare_to=paper.compare_to,
                               aspects=aspects, differences=list(paper.differences), reported=paper.reported,
                               cell=cell, contradictions=list(paper.contradictions),
                               other_methods=[m.model_dump() for m in paper.other_methods])
