"""Ensembles of a finished training grid, built from the units' saved predictions only.

A run trains scenarios (e.g. learning rates) x k folds; every unit wrote
``RUN/units/<scenario>/fold_<k>/predictions_val.csv`` (its own validation fold) and
``predictions_test.csv`` (the common held-out test set), with columns ``path``, ``y_true``
(integer class index) and ``prob_<class>`` per class in class order. From these:

* inter ensemble (``inter[<scenario>]/<weighting>``): the k fold models of one scenario,
  built for every scenario with at least two folds;
* intra ensemble (``intra/<weighting>``): the champion of every scenario, built when there
  are at least two scenarios.
* scenario ensemble (``scenarios/greedy``): with the ``greedy`` weighting and at least two
  scenarios, greedy selection (Caruana et al. 2004) over the scenarios. A scenario's
  validation prediction is its units' out-of-fold predictions concatenated (together they
  cover the training pool once); its test prediction is the mean of its fold models' test
  probabilities. ``greedy`` is not built for inter/intra ensembles: their members
  validate on different folds, so there is no common validation set to select on.

The intra ensemble's champions come from :mod:`allwen.evaluation.selection` (one rule for
every choice); reading and writing the files is the run folder's (:mod:`allwen.runfolder`).
Nothing here touches disk.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from allwen.ensemble.weighting import check_weighting_name
from allwen.ensemble.wen import WeightedEnsemble
from allwen.evaluation import selection
from allwen.runfolder import EnsembleRecord, UnitPredictions

log = logging.getLogger(__name__)


@dataclass
class EnsembleResult:
    """One ensemble's members, weights and test probabilities (arrays stay in memory)."""

    name: str
    kind: Literal["inter", "intra", "scenarios"]
    scenario: str | None
    weighting: str
    members: list[str]
    scores: list[float]
    weights: list[float]
    note: str
    test_y: np.ndarray
    test_proba: np.ndarray
    champion_by: str | None
    champion_metric: str | None = None
    classes: list[str] = field(default_factory=list)
    test_paths: list[str] = field(default_factory=list)

    def record(self) -> EnsembleRecord:
        """What ``ensemble.json`` keeps of this result."""
        return EnsembleRecord(name=self.name, kind=self.kind, scenario=self.scenario, weighting=self.weighting,
                              members=self.members, scores=self.scores, weights=self.weights, note=self.note,
                              champion_by=self.champion_by, champion_metric=self.champion_metric,
                              classes=self.classes)


def _check_aligned(units: list[UnitPredictions]) -> None:
    """Members must share classes and predict the same test images in the same order."""
    first = units[0]
    for other in units[1:]:
        if other.classes != first.classes:
            raise ValueError(
                f"units {first.name} and {other.name} have different classes "
                f"({first.classes} vs {other.classes}); they cannot be ensembled"
            )
        if other.test_paths != first.test_paths:
            raise ValueError(
                f"units {first.name} and {other.name} list different test images or a "
                "different order in predictions_test.csv; the test rows must align to "
                "be ensembled (re-run the unit whose test predictions are stale)"
            )
        if not np.array_equal(other.test_y, first.test_y):
            raise ValueError(
                f"units {first.name} and {other.name} disagree on the test labels y_true "
                "for the same images; re-run the unit whose test predictions are stale"
            )


def _ensemble(
    units: list[UnitPredictions],
    weighting: str,
    name: str,
    kind: Literal["inter", "intra", "scenarios"],
    scenario: str | None,
    champion_by: str | None,
    champion_metric: str | None,
    weights_from: str = "validation",
) -> EnsembleResult:
    side = "test" if weights_from == "test" else "val"  # test: A's section 3.5 reading, test-selected weights
    wen = WeightedEnsemble(weighting=weighting).fit(
        [getattr(u, f"{side}_proba") for u in units], [getattr(u, f"{side}_y") for u in units],
        names=[u.name for u in units]
    )
    proba = wen.predict_proba([u.test_proba for u in units])
    return EnsembleResult(
        name=name,
        kind=kind,
        scenario=scenario,
        weighting=weighting,
        members=list(wen.names_),
        scores=[float(s) for s in wen.scores_],
        weights=[float(w) for w in wen.weights_],
        note=wen.note_ + ("; weights from the members' TEST metrics (test-selected)" if side == "test" else ""),
        test_y=units[0].test_y.copy(),
        test_proba=proba,
        champion_by=champion_by,
        champion_metric=champion_metric,
        classes=list(units[0].classes),
        test_paths=list(units[0].test_paths),
    )


def build_ensembles(
    units_by_scenario: dict[str, list[UnitPredictions]],
    weightings: list[str],
    champion_by: Literal["validation", "test", "test_all"] = "validation",
    champion_metric: str = "accuracy",
    champions: dict[str, UnitPredictions] | None = None,
    weights_from: Literal["validation", "test"] = "validation",
) -> list[EnsembleResult]:
    """Inter ensembles (per scenario with >= 2 folds) then intra (>= 2 scenarios), per weighting.

    ``champions``: the run's champions as evaluation chose them
    (:func:`allwen.evaluation.selection.chosen_champions`); None: chosen here by the same rule.

    A run with one fold per scenario builds none: there is no champion to choose among folds,
    and the report must not show a section the run cannot fill.

    All units must predict the same test images in the same order; otherwise a ValueError
    names the first two units that differ. A weighting undefined for some member (e.g.
    ``auc`` on a single-class validation fold) raises rather than silently dropping that
    ensemble: remove the weighting from the list to build the rest. ``weights_from: test`` weights
    the intra ensembles by their champions' test metrics (``ensemble.weights_from``).
    """
    if not weightings:
        raise ValueError("no weightings given; choose from accuracy, f1, kappa, auc, uniform, vote, greedy")
    for weighting in weightings:
        check_weighting_name(weighting)
    if len(set(weightings)) != len(weightings):
        raise ValueError(f"weightings listed twice: {weightings}")
    selection.check_rule(champion_by, champion_metric)
    all_units = [u for us in units_by_scenario.values() for u in us]
    if not all_units:
        raise ValueError("no units to ensemble")
    _check_aligned(all_units)

    per_member = [w for w in weightings if w != "greedy"]
    results: list[EnsembleResult] = []
    for scenario, units in units_by_scenario.items():
        if len(units) < 2:
            log.info("scenario %s has %d fold(s): no inter ensemble", scenario, len(units))
            continue
        units = sorted(units, key=lambda u: u.fold)
        for weighting in per_member:
            results.append(
                _ensemble(units, weighting, f"inter[{scenario}]/{weighting}", "inter",
                          scenario, None, None)
            )
    if champions is None:
        champions = selection.chosen_champions(units_by_scenario, champion_by, champion_metric)
    if not selection.several_folds(units_by_scenario):  # a scenario's only model is no champion (B, C and E)
        log.info("one fold per scenario: no ensembles (inter needs folds; intra combines champions chosen among folds)")
    elif len(units_by_scenario) >= 2:
        for weighting in per_member:
            results.append(
                _ensemble(list(champions.values()), weighting, f"intra/{weighting}", "intra",
                          None, champion_by, champion_metric, weights_from)
            )
        if "greedy" in weightings:
            members = [scenario_predictions(us) for us in units_by_scenario.values()]
            for member in members[1:]:
                if member.val_paths != members[0].val_paths:
                    raise ValueError(
                        f"greedy: scenarios {members[0].name} and {member.name} have validation folds over "
                        "different images; greedy selection needs one training pool split the same way"
                    )
            results.append(_ensemble(members, "greedy", "scenarios/greedy", "scenarios", None, None, champion_metric))
    else:
        log.info("only one scenario: no intra or scenario ensemble")
    return results


def scenario_predictions(units: list[UnitPredictions]) -> UnitPredictions:
    """A scenario as one member: out-of-fold validation predictions, mean test probabilities.

    Every unit predicted its own validation fold, so the concatenation covers the training
    pool once; rows are sorted by path so that scenarios line up row for row.
    """
    units = sorted(units, key=lambda u: u.fold)
    paths = [p for u in units for p in u.val_paths]
    if len(set(paths)) != len(paths):
        raise ValueError(f"scenario {units[0].scenario}: validation folds overlap; out-of-fold predictions need disjoint folds")
    order = np.argsort(np.asarray(paths, dtype=object), kind="stable")
    return UnitPredictions(
        scenario=units[0].scenario, fold=-1, name=units[0].scenario, classes=list(units[0].classes),
        val_paths=[paths[i] for i in order],
        val_y=np.concatenate([u.val_y for u in units])[order],
        val_proba=np.concatenate([u.val_proba for u in units])[order],
        test_paths=list(units[0].test_paths), test_y=units[0].test_y.copy(),
        test_proba=np.mean([u.test_proba for u in units], axis=0),
    )
