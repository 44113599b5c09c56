"""Every choice of a run, made once, by pure functions over in-memory predictions.

One rule each, all honouring ``ensemble.champion_by`` (``by``) and ``ensemble.champion_metric``
(``metric``):

* **score of a unit** (:func:`unit_score`): ``metric`` on its own validation fold
  (``by="validation"``), on the test set (``"test"``), or the mean of test accuracy,
  precision, recall, F1 and kappa (``"test_all"``, Experiment A's own rule).
* **champion** of a scenario: its unit with the highest score; ties go to the lowest fold.
* **best single model**: the unit with the highest score over the whole grid; ties go to
  the earlier scenario (grid order), then the lowest fold. The same score as champions, so
  the best single model is always one of the champions.
* **best ensemble** (of a kind, or overall): ``by="validation"``: the highest weighted mean of
  its members' validation scores, weighted as the ensemble weights them (an ensemble has no
  validation predictions of its own; a unit member's is its own fold, a scenario member's its
  out-of-fold predictions); ``"test"``/``"test_all"``: its own test score. Ties: the earlier
  ensemble in build order.
* **grid winner** (a grid or one sweep step): the scenario with the best mean validation
  ``sweep_metric`` over its folds; ties go to the earlier scenario.
* **default export**: the best ensemble by validation, or the best single model by validation
  when the run has no ensembles; test data never touch it, whatever ``champion_by`` says.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, Sequence

import numpy as np

from allwen.config.choices import CHAMPION_BY, SELECTION_METRICS  # noqa: F401  (re-exported)
from allwen.evaluation.metric_registry import selectable_names
from allwen.evaluation.metrics import compute_metrics
from allwen.evaluation.results import Ensemble, WeightingMean

#: ``champion_by="test_all"``: Experiment A's rule, the best on the test set "judged on
#: accuracy, precision, recall, F1 and kappa together", read as their mean.
TEST_ALL_METRICS = ("accuracy", "precision", "recall", "f1", "kappa")


class Predicted(Protocol):
    """What selection needs of a unit (or of a scenario as one member)."""

    scenario: str
    fold: int
    name: str
    val_y: np.ndarray
    val_proba: np.ndarray
    test_y: np.ndarray
    test_proba: np.ndarray


@dataclass(frozen=True)
class Candidate:
    """An ensemble as selection sees it: its members, weights and test probabilities."""

    name: str
    kind: str
    members: Sequence[str]
    weights: Sequence[float]
    test_y: np.ndarray
    test_proba: np.ndarray


def check_rule(by: str, metric: str) -> None:
    if by not in CHAMPION_BY:
        raise ValueError(f"champion_by must be one of {', '.join(CHAMPION_BY)}, got {by!r}")
    if metric not in selectable_names():
        raise ValueError(f"champion metric must be one of {', '.join(selectable_names())}, got {metric!r}")


def score(y: np.ndarray, proba: np.ndarray, by: str, metric: str, what: str) -> float:
    """``metric`` (or the test_all mean) of predictions; undefined or unlabelled is an error."""
    if by != "validation" and np.any(np.asarray(y) < 0):
        raise ValueError(f"{what}: the test set has unlabelled images, so it cannot be chosen by test metric; "
                         "use champion_by='validation'")
    values = compute_metrics(y, proba)
    value = float(np.mean([values[k] for k in TEST_ALL_METRICS])) if by == "test_all" else float(values[metric])
    if not np.isfinite(value):
        raise ValueError(f"{what}: {metric} is undefined on its {'validation' if by == 'validation' else 'test'} "
                         "predictions; choose by another metric (e.g. accuracy)")
    return value


def unit_score(unit: Predicted, by: str = "validation", metric: str = "accuracy") -> float:
    if by == "validation":
        return score(unit.val_y, unit.val_proba, by, metric, f"unit {unit.name}")
    return score(unit.test_y, unit.test_proba, by, metric, f"unit {unit.name}")


def _first_best(scores: Sequence[float]) -> int:
    return int(np.argmax(np.asarray(scores, dtype=float)))  # the first maximum


def champion(units: Sequence[Predicted], by: str = "validation", metric: str = "accuracy") -> Predicted:
    """The unit with the highest score; ties go to the lowest fold (whatever the listing order)."""
    check_rule(by, metric)
    if not units:
        raise ValueError("cannot select a champion from no units")
    ranked = sorted(units, key=lambda u: u.fold)
    return ranked[_first_best([unit_score(u, by, metric) for u in ranked])]


def champions(units_by_scenario: dict[str, Sequence[Predicted]], by: str = "validation",
              metric: str = "accuracy") -> dict[str, Predicted]:
    """Each scenario's champion, in the scenarios' order."""
    return {s: champion(us, by, metric) for s, us in units_by_scenario.items()}


def several_folds(units_by_scenario: dict[str, Sequence[object]]) -> bool:
    """Whether some scenario has two or more folds: a champion is chosen among a scenario's folds, so a
    one-fold run (B, C and E) has none, and no inter or intra ensemble (the report asks this too, of
    the recorded single models)."""
    return max((len(us) for us in units_by_scenario.values()), default=0) >= 2


def chosen_champions(units_by_scenario: dict[str, Sequence[Predicted]], by: str = "validation",
                     metric: str = "accuracy") -> dict[str, Predicted]:
    """The run's champions, chosen once: :func:`champions` when :func:`several_folds`, else none."""
    return champions(units_by_scenario, by, metric) if several_folds(units_by_scenario) else {}


def best_single(units_by_scenario: dict[str, Sequence[Predicted]], by: str = "validation",
                metric: str = "accuracy") -> Predicted:
    """The best of the champions (ties: the earlier scenario)."""
    best = list(champions(units_by_scenario, by, metric).values())
    if not best:
        raise ValueError("cannot select a best single model from no units")
    return best[_first_best([unit_score(u, by, metric) for u in best])]


def member_scores(members: dict[str, Predicted], metric: str) -> dict[str, float]:
    """Each member's validation ``metric`` (a unit's own fold; a scenario's out-of-fold rows)."""
    return {name: unit_score(m, "validation", metric) for name, m in members.items()}


def ensemble_score(candidate: Candidate, by: str, metric: str, validation: dict[str, float]) -> float:
    """:func:`best_ensemble`'s score of one ensemble (``validation``: the members' scores)."""
    if by == "validation":
        missing = [m for m in candidate.members if m not in validation]
        if missing:
            raise ValueError(f"ensemble {candidate.name}: no validation score for member {missing[0]}")
        return float(sum(float(w) * validation[m] for m, w in zip(candidate.members, candidate.weights)))
    return score(candidate.test_y, candidate.test_proba, by, metric, f"ensemble {candidate.name}")


def best_ensemble(candidates: Sequence[Candidate], by: str, metric: str,
                  validation: dict[str, float]) -> Candidate | None:
    """The highest-scoring ensemble (None for none); ties: the earlier one."""
    check_rule(by, metric)
    if not candidates:
        return None
    return candidates[_first_best([ensemble_score(c, by, metric, validation) for c in candidates])]


def best_ensembles(candidates: Sequence[Candidate], by: str, metric: str,
                   validation: dict[str, float]) -> dict[str, str]:
    """The best ensemble of each kind (kinds in build order)."""
    out: dict[str, str] = {}
    for kind in dict.fromkeys(c.kind for c in candidates):
        best = best_ensemble([c for c in candidates if c.kind == kind], by, metric, validation)
        if best is not None:
            out[kind] = best.name
    return out


def grid_winner(mean_scores: Sequence[float | None]) -> int:
    """Index of the best mean validation score (missing counts as -1; ties: the earlier)."""
    if not mean_scores:
        raise ValueError("cannot choose a grid winner from no scenarios")
    return _first_best([-1.0 if s is None or not np.isfinite(s) else s for s in mean_scores])


def default_export(candidates: Sequence[Candidate], units_by_scenario: dict[str, Sequence[Predicted]],
                   metric: str, validation: dict[str, float]) -> str:
    """The model ``allwen export`` writes without ``--model``, chosen on validation data only."""
    best = best_ensemble(candidates, "validation", metric, validation)
    return best.name if best is not None else best_single(units_by_scenario, "validation", metric).name


__all__ = ["CHAMPION_BY", "Candidate", "SELECTION_METRICS", "TEST_ALL_METRICS", "best_ensemble", "best_ensembles",
           "best_single", "champion", "champions", "default_export", "ensemble_score", "grid_winner",
           "member_scores", "score", "unit_score"]


# --------------------------------------------------------------------------- the best weighting (Experiment A's question)

#: the study's three weightings (Experiment A asks which of them is best)
STUDY_WEIGHTINGS = ("accuracy", "f1", "kappa")


def weighting_means(ensembles: Sequence[Ensemble], by: str = "test", metric: str = "accuracy",
                    validation: dict[str, float] | None = None) -> list[WeightingMean]:
    """Each weighting's mean score over its ensembles, by the champion rule (``ensemble.champion_by``):
    validation = each ensemble's out-of-fold validation ``metric`` (``validation``), test = its test
    ``metric``, test_all = the mean of its five test metrics (A's rule). Without a rule: test accuracy."""
    by_weighting: dict[str, list[float]] = {}
    for e in ensembles:
        if by == "validation" and validation is not None:
            score = validation.get(e.name, float("nan"))
        elif by == "test_all":
            score = float(np.mean([e.metrics.value(k) or 0.0 for k in TEST_ALL_METRICS]))
        else:
            score = e.metrics.value(metric if by != "validation" else "accuracy") or 0.0
        by_weighting.setdefault(e.weighting, []).append(score)
    return [WeightingMean(weighting=w, mean=float(np.nanmean(v)) if not np.isnan(v).all() else 0.0, n=len(v))
            for w, v in by_weighting.items()]


def best_weighting(means: Sequence[WeightingMean]) -> str | None:
    """The weighting with the highest mean accuracy (ties: the first listed)."""
    return max(means, key=lambda m: m.mean).weighting if means else None


def best_study_weighting(means: Sequence[WeightingMean]) -> str | None:
    """The study's weighting (accuracy, F1, kappa) with the highest mean score (else any weighting)."""
    return best_weighting([m for m in means if m.weighting in STUDY_WEIGHTINGS] or list(means))
