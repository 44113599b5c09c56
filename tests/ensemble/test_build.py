"""Ensembles built in memory from units' predictions: inter, intra, greedy, alignment checks."""

from __future__ import annotations

import numpy as np
import pytest

from allwen.ensemble.build import build_ensembles
from allwen.ensemble.weighting import WEIGHTING_NAMES
from allwen.ensemble.wen import WeightedEnsemble
from allwen.runfolder import UnitPredictions

CLASSES = ["hem", "all"]
SCENARIOS = ["lr=0.001", "lr=0.0001", "lr=1e-05"]
N_TEST = 20
TEST_PATHS = [f"/data/test/img_{i:03d}.bmp" for i in range(N_TEST)]
TEST_Y = np.arange(N_TEST) % 2


def _proba(p1) -> np.ndarray:
    p1 = np.asarray(p1, dtype=float)
    return np.stack([1 - p1, p1], axis=1)


def unit(scenario: str, fold: int, val_p1, test_p1, val_y=None, val_paths=None) -> UnitPredictions:
    val_y = np.array([1, 1, 1, 1, 0, 0, 0, 0]) if val_y is None else np.asarray(val_y)
    val_paths = val_paths or [f"/data/train/{scenario}_{fold}_{i}.bmp" for i in range(len(val_y))]
    return UnitPredictions(scenario, fold, f"{scenario}/fold_{fold}", CLASSES, list(val_paths), val_y, _proba(val_p1),
                           list(TEST_PATHS), TEST_Y.copy(), _proba(test_p1))


# Scenario lr=0.001 is built so its champion depends on the rule:
# fold_0: validation 8/8 correct, test only 10/20 (always says "all");
# fold_1: validation 6/8 correct, test 20/20.
GOOD_VAL = [0.9, 0.8, 0.7, 0.6, 0.1, 0.2, 0.3, 0.4]
OK_VAL = [0.9, 0.8, 0.4, 0.3, 0.1, 0.2, 0.3, 0.4]
PERFECT_TEST = np.where(TEST_Y == 1, 0.8, 0.2)
ALWAYS_ALL_TEST = np.full(N_TEST, 0.7)


def grid() -> dict[str, list[UnitPredictions]]:
    rng = np.random.default_rng(0)
    units = {"lr=0.001": [unit("lr=0.001", 0, GOOD_VAL, ALWAYS_ALL_TEST), unit("lr=0.001", 1, OK_VAL, PERFECT_TEST),
                          unit("lr=0.001", 2, rng.uniform(size=8), rng.uniform(size=N_TEST))]}
    for scenario in SCENARIOS[1:]:
        val_y = np.array([1, 1, 1, 1, 0, 0, 0, 0])
        units[scenario] = [unit(scenario, fold, np.clip(0.3 * val_y + rng.uniform(0.1, 0.7, size=8), 0, 1),
                                np.clip(0.3 * TEST_Y + rng.uniform(0.1, 0.7, size=N_TEST), 0, 1), val_y)
                           for fold in range(3)]
    return units


PER_MEMBER = [w for w in WEIGHTING_NAMES if w != "greedy"]


def test_build_gives_three_inter_and_one_intra_per_weighting():
    units = grid()
    results = build_ensembles(units, PER_MEMBER)
    assert len(results) == 4 * len(PER_MEMBER)
    names = {r.name for r in results}
    for weighting in PER_MEMBER:
        assert "intra/" + weighting in names
        for scenario in SCENARIOS:
            assert f"inter[{scenario}]/{weighting}" in names
    for r in results:
        assert r.test_proba.shape == (N_TEST, 2)
        assert sum(r.weights) == pytest.approx(1.0)
        np.testing.assert_array_equal(r.test_y, TEST_Y)
        assert len(r.members) == 3
        if r.kind == "inter":
            assert r.champion_by is None and all(m.startswith(r.scenario) for m in r.members)
        else:
            assert r.scenario is None and r.champion_by == "validation"
            assert {m.split("/")[0] for m in r.members} == set(SCENARIOS)

    inter = next(r for r in results if r.name == "inter[lr=1e-05]/kappa")
    us = units["lr=1e-05"]
    direct = WeightedEnsemble("kappa").fit([u.val_proba for u in us], [u.val_y for u in us])
    np.testing.assert_allclose(inter.test_proba, direct.predict_proba([u.test_proba for u in us]))


@pytest.mark.parametrize(("by", "champion"), [("validation", "lr=0.001/fold_0"), ("test", "lr=0.001/fold_1"),
                                              ("test_all", "lr=0.001/fold_1")])
def test_intra_members_are_the_champions_of_the_rule(by, champion):
    intra = build_ensembles(grid(), ["uniform"], champion_by=by)[-1]
    assert champion in intra.members and intra.champion_by == by


def test_single_fold_and_single_scenario_build_nothing_extra():
    assert build_ensembles({"only": [unit("only", 0, GOOD_VAL, PERFECT_TEST)]}, ["kappa"]) == []


def test_misaligned_test_paths_name_both_units():
    units = grid()
    bad = units["lr=1e-05"][1]
    bad.test_paths = bad.test_paths[::-1]
    with pytest.raises(ValueError, match=r"lr=0\.001/fold_0 and lr=1e-05/fold_1 .*must align"):
        build_ensembles(units, ["kappa"])


def test_unknown_weighting_rejected():
    with pytest.raises(ValueError, match="known weightings"):
        build_ensembles(grid(), ["kappa", "brier"])


def test_greedy_combines_scenarios_out_of_fold():
    """Two scenarios x 2 folds over the same 8 training images; greedy works on all 8 rows."""
    val_y = np.array([1, 0, 1, 0])
    folds = {0: [f"/data/train/img_{i}.bmp" for i in (0, 2, 4, 6)], 1: [f"/data/train/img_{i}.bmp" for i in (1, 3, 5, 7)]}
    good_val, bad_val = np.where(val_y == 1, 0.8, 0.2), np.where(val_y == 1, 0.4, 0.6)
    units = {scenario: [unit(scenario, fold, val_p1, test_p1 + 0.1 * fold, val_y, paths) for fold, paths in folds.items()]
             for scenario, val_p1, test_p1 in (("lr=0.01", good_val, PERFECT_TEST), ("lr=0.1", bad_val, np.full(N_TEST, 0.3)))}
    results = build_ensembles(units, ["greedy", "uniform"])
    assert [r.name for r in results] == ["inter[lr=0.01]/uniform", "inter[lr=0.1]/uniform", "intra/uniform",
                                         "scenarios/greedy"]
    greedy = results[-1]
    assert greedy.kind == "scenarios" and greedy.members == ["lr=0.01", "lr=0.1"]
    assert greedy.weights == [1.0, 0.0]  # the wrong scenario never improves validation accuracy
    np.testing.assert_allclose(greedy.test_proba[:, 1], PERFECT_TEST + 0.05)  # mean of the fold models
    units["lr=0.1"][1].val_paths = [p.replace("img_", "other_") for p in units["lr=0.1"][1].val_paths]
    with pytest.raises(ValueError, match="different images"):
        build_ensembles(units, ["greedy"])
