"""The paper's headline numbers beside this run's (``paper_comparison`` in ``summary.json``).

A preset's ``paper:`` block names the numbers its study reported; here each becomes one fact:
the paper's value, this run's value of the same metric for the model the block names (the best
single model, or the most accurate ensemble), the run's interval and whether the paper's value
lies inside it. The protocol facts that make the two differ (split level, where the reported
model was chosen, the averaging of precision/recall/F1, the test-set size) are recorded beside
them; the report words both.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from allwen.evaluation.results import PaperComparison, PaperProtocol, ProtocolAspect

if TYPE_CHECKING:
    from allwen.config import Config
    from allwen.evaluation.results import ModelResult, Summary


def _compared_model(summary: Summary, compare_to: str) -> ModelResult:
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
    model = _compared_model(summary, paper.compare_to)
    rows = []
    for number in paper.numbers:
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
                               aspects=aspects, differences=list(paper.differences))
