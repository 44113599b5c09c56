"""Every choice of a run, in memory: champions, best single model, best ensemble, grid winner, default export."""

from __future__ import annotations

import numpy as np
import pytest

from allwen.evaluation import selection
from allwen.evaluation.selection import Candidate
from allwen.runfolder import UnitPredictions

TEST_Y = np.arange(20) % 2
VAL_Y = np.array([1, 1, 1, 1, 0, 0, 0, 0])


def _proba(p1) -> np.ndarray:
    p1 = np.asarray(p1, dtype=float)
    return np.stack([1 - p1, p1], axis=1)


def unit(scenario: str, fold: int, val_correct: int, test_correct: int) -> UnitPredictions:
    """A unit right on the first ``val_correct`` of 8 validation and ``test_correct`` of 20 test images."""
    val = np.where(VAL_Y == 1, 0.8, 0.2)
    val[val_correct:] = 1 - val[val_correct:]
    test = np.where(TEST_Y == 1, 0.8, 0.2)
    test[test_correct:] = 1 - test[test_correct:]
    return UnitPredictions(scenario, fold, f"{scenario}/fold_{fold}", ["hem", "all"], [f"v{fold}_{i}" for i in range(8)],
                           VAL_Y, _proba(val), [f"t{i}" for i in range(20)], TEST_Y, _proba(test))


# lr=0.1: fold_0 best on validation, fold_1 best on test; lr=0.01: fold_1 best everywhere
GRID = {"lr=0.1": [unit("lr=0.1", 0, 8, 10), unit("lr=0.1", 1, 6, 20)],
        "lr=0.01": [unit("lr=0.01", 0, 5, 12), unit("lr=0.01", 1, 7, 14)]}


@pytest.mark.parametrize(("by", "expected"), [("validation", "lr=0.1/fold_0"), ("test", "lr=0.1/fold_1"),
                                              ("test_all", "lr=0.1/fold_1")])
def test_champion_follows_champion_by(by, expected):
    assert selection.champion(GRID["lr=0.1"], by).name == expected


def test_champion_tie_goes_to_the_lowest_fold_whatever_the_order():
    tied = [unit("s", 2, 8, 20), unit("s", 0, 8, 20), unit("s", 1, 8, 20)]
    assert selection.champion(tied, metric="kappa").fold == 0


def test_champion_rejects_bad_options():
    with pytest.raises(ValueError, match="one of validation, test, test_all"):
        selection.champion(GRID["lr=0.1"], by="train")
    with pytest.raises(ValueError, match="champion metric must be one of"):
        selection.champion(GRID["lr=0.1"], metric="uniform")
    with pytest.raises(ValueError, match="no units"):
        selection.champion([])


@pytest.mark.parametrize(("by", "expected"), [("validation", "lr=0.1/fold_0"), ("test", "lr=0.1/fold_1"),
                                              ("test_all", "lr=0.1/fold_1")])
def test_best_single_is_the_best_champion_by_the_same_rule(by, expected):
    best = selection.best_single(GRID, by)
    assert best.name == expected
    assert best.name in {c.name for c in selection.champions(GRID, by).values()}


def test_best_single_tie_goes_to_the_earlier_scenario():
    grid = {"b": [unit("b", 0, 8, 10)], "a": [unit("a", 0, 8, 20)]}
    assert selection.best_single(grid).name == "b/fold_0"


def _candidates() -> list[Candidate]:
    acc = {n: u for us in GRID.values() for u in us for n in [u.name]}
    inter_a = Candidate("inter[lr=0.1]/accuracy", "inter", ["lr=0.1/fold_0", "lr=0.1/fold_1"], [0.6, 0.4], TEST_Y,
                        acc["lr=0.1/fold_1"].test_proba)  # as accurate on test as its best member
    inter_b = Candidate("inter[lr=0.01]/accuracy", "inter", ["lr=0.01/fold_0", "lr=0.01/fold_1"], [0.5, 0.5], TEST_Y,
                        acc["lr=0.01/fold_0"].test_proba)
    greedy = Candidate("scenarios/greedy", "scenarios", ["lr=0.1", "lr=0.01"], [0.2, 0.8], TEST_Y,
                       acc["lr=0.1/fold_0"].test_proba)
    return [inter_a, inter_b, greedy]


def test_best_ensemble_by_validation_weights_the_members_scores_and_never_reads_test():
    members = {u.name: u for us in GRID.values() for u in us}
    members |= {"lr=0.1": unit("lr=0.1", -1, 7, 0), "lr=0.01": unit("lr=0.01", -1, 4, 0)}  # scenario members
    validation = selection.member_scores(members, "accuracy")
    assert validation["lr=0.1/fold_0"] == 1.0 and validation["lr=0.1"] == 7 / 8
    # inter_a: 0.6 * 8/8 + 0.4 * 6/8 = 0.9; inter_b: (5/8 + 7/8) / 2 = 0.75; greedy: 0.2 * 7/8 + 0.8 * 4/8 = 0.575
    scores = [selection.ensemble_score(c, "validation", "accuracy", validation) for c in _candidates()]
    assert scores == pytest.approx([0.9, 0.75, 0.575])
    assert selection.best_ensemble(_candidates(), "validation", "accuracy", validation).name == "inter[lr=0.1]/accuracy"
    assert selection.best_ensembles(_candidates(), "validation", "accuracy", validation) == {
        "inter": "inter[lr=0.1]/accuracy", "scenarios": "scenarios/greedy"}
    # with champion_by test, the ensembles' own test accuracy decides (20/20, 12/20, 10/20)
    assert selection.best_ensemble(_candidates(), "test", "accuracy", {}).name == "inter[lr=0.1]/accuracy"
    assert selection.best_ensemble([], "validation", "accuracy", {}) is None
    # the default export is chosen on validation data only, whatever champion_by says
    assert selection.default_export(_candidates(), GRID, "accuracy", validation) == "inter[lr=0.1]/accuracy"
    assert selection.default_export([], GRID, "accuracy", validation) == "lr=0.1/fold_0"


def test_grid_winner_ties_go_to_the_earlier_scenario():
    assert selection.grid_winner([0.5, 0.7, 0.7]) == 1
    assert selection.grid_winner([None, float("nan"), 0.1]) == 2
    with pytest.raises(ValueError, match="no scenarios"):
        selection.grid_winner([])


def test_test_rules_refuse_an_unlabelled_test_set():
    u = unit("s", 0, 8, 20)
    u.test_y = np.full(20, -1)
    with pytest.raises(ValueError, match="unlabelled"):
        selection.unit_score(u, "test")
