"""Ensembles of a fake run folder: discovery, champions, alignment checks and writing."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from allwen.ensemble.build import (
    MissingPredictionsError,
    build_ensembles,
    load_unit_predictions,
    safe_name,
    select_champion,
    write_ensemble,
)
from allwen.ensemble.build import discover_units as _discover_units
from allwen.ensemble.weighting import WEIGHTING_NAMES
from allwen.ensemble.wen import WeightedEnsemble



def discover_units(run_dir):
    """These fake runs have no split.csv or unit.json: only the builder's logic is tested here
    (checking predictions against the split is tested in tests/reliability)."""
    return _discover_units(run_dir, verify=False)


CLASSES = ["hem", "all"]
SCENARIOS = ["lr=0.001", "lr=0.0001", "lr=1e-05"]
N_TEST = 20
TEST_PATHS = [f"/data/test/img_{i:03d}.bmp" for i in range(N_TEST)]
TEST_Y = np.arange(N_TEST) % 2


def _write(path: Path, paths: list[str], y: np.ndarray, p1: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(
        {"path": paths, "y_true": y, "prob_hem": 1 - p1, "prob_all": p1}
    ).to_csv(path, index=False)


def _write_unit(run: Path, scenario: str, fold: int, val_p1, test_p1, val_y=None) -> Path:
    unit = run / "units" / scenario / f"fold_{fold}"
    val_y = np.array([1, 1, 1, 1, 0, 0, 0, 0]) if val_y is None else val_y
    val_paths = [f"/data/train/{scenario}_{fold}_{i}.bmp" for i in range(len(val_y))]
    _write(unit / "predictions_val.csv", val_paths, val_y, np.asarray(val_p1, dtype=float))
    _write(unit / "predictions_test.csv", TEST_PATHS, TEST_Y, np.asarray(test_p1, dtype=float))
    return unit


# Scenario lr=0.001 is built so its champion depends on the rule:
# fold_0: validation 8/8 correct, test only 10/20 (always says "all");
# fold_1: validation 6/8 correct, test 20/20.
GOOD_VAL = [0.9, 0.8, 0.7, 0.6, 0.1, 0.2, 0.3, 0.4]
OK_VAL = [0.9, 0.8, 0.4, 0.3, 0.1, 0.2, 0.3, 0.4]
PERFECT_TEST = np.where(TEST_Y == 1, 0.8, 0.2)
ALWAYS_ALL_TEST = np.full(N_TEST, 0.7)


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    run = tmp_path / "run"
    _write_unit(run, "lr=0.001", 0, GOOD_VAL, ALWAYS_ALL_TEST)
    _write_unit(run, "lr=0.001", 1, OK_VAL, PERFECT_TEST)
    _write_unit(run, "lr=0.001", 2, rng.uniform(size=8), rng.uniform(size=N_TEST))
    for scenario in SCENARIOS[1:]:
        for fold in (2, 0, 1):  # written out of order: discovery must sort
            val_y = np.array([1, 1, 1, 1, 0, 0, 0, 0])
            val_p1 = np.clip(0.3 * val_y + rng.uniform(0.1, 0.7, size=8), 0, 1)
            test_p1 = np.clip(0.3 * TEST_Y + rng.uniform(0.1, 0.7, size=N_TEST), 0, 1)
            _write_unit(run, scenario, fold, val_p1, test_p1, val_y)
    (run / "units" / "lr=0.001" / "notes").mkdir()  # not a fold folder: ignored
    return run


def test_discover_units_sorted_by_fold(run_dir):
    units = discover_units(run_dir)
    assert sorted(units) == sorted(SCENARIOS)
    for scenario, us in units.items():
        assert [u.fold for u in us] == [0, 1, 2]
        assert [u.name for u in us] == [f"{scenario}/fold_{k}" for k in range(3)]
        assert all(u.classes == CLASSES for u in us)
        assert us[0].val_proba.shape == (8, 2) and us[0].test_proba.shape == (N_TEST, 2)
        assert us[0].test_paths == TEST_PATHS


def test_build_gives_three_inter_and_one_intra_per_weighting(run_dir):
    units = discover_units(run_dir)
    results = build_ensembles(units, list(WEIGHTING_NAMES))
    assert len(results) == 4 * len(WEIGHTING_NAMES)
    names = {r.name for r in results}
    for weighting in WEIGHTING_NAMES:
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


def test_champion_by_validation_differs_from_champion_by_test(run_dir):
    units = discover_units(run_dir)["lr=0.001"]
    assert select_champion(units, by="validation").name == "lr=0.001/fold_0"
    assert select_champion(units, by="test").name == "lr=0.001/fold_1"

    by_val = build_ensembles(discover_units(run_dir), ["uniform"])[-1]
    by_test = build_ensembles(discover_units(run_dir), ["uniform"], champion_by="test")[-1]
    assert "lr=0.001/fold_0" in by_val.members and "lr=0.001/fold_1" in by_test.members
    assert by_test.champion_by == "test"


def test_test_all_is_the_studys_rule_five_test_metrics_together(run_dir):
    units = discover_units(run_dir)["lr=0.001"]
    # fold_1 is perfect on the test set, fold_0 says "all" for everything
    assert select_champion(units, by="test_all").fold == 1
    assert select_champion(units, by="validation").fold == 0
    intra = build_ensembles(discover_units(run_dir), ["uniform"], champion_by="test_all")[-1]
    assert "lr=0.001/fold_1" in intra.members and intra.champion_by == "test_all"


def test_champion_tie_goes_to_lowest_fold(tmp_path):
    for fold in (0, 1, 2):
        _write_unit(tmp_path / "run", "s", fold, GOOD_VAL, PERFECT_TEST)
    units = discover_units(tmp_path / "run")["s"]
    assert select_champion(list(reversed(units)), metric="kappa").fold == 0


def test_select_champion_rejects_bad_options(run_dir):
    units = discover_units(run_dir)["lr=0.001"]
    with pytest.raises(ValueError, match="one of validation, test, test_all"):
        select_champion(units, by="train")
    with pytest.raises(ValueError, match="champion metric must be one of"):
        select_champion(units, metric="uniform")
    with pytest.raises(ValueError, match="no units"):
        select_champion([])


def test_single_fold_and_single_scenario_build_nothing_extra(tmp_path):
    _write_unit(tmp_path / "run", "only", 0, GOOD_VAL, PERFECT_TEST)
    assert build_ensembles(discover_units(tmp_path / "run"), ["kappa"]) == []


def test_misaligned_test_paths_name_both_units(run_dir):
    test_csv = run_dir / "units" / "lr=1e-05" / "fold_1" / "predictions_test.csv"
    frame = pd.read_csv(test_csv)
    frame.iloc[::-1].to_csv(test_csv, index=False)
    units = discover_units(run_dir)
    # scenarios are sorted by name, so the reference unit is lr=0.0001/fold_0
    with pytest.raises(ValueError, match=r"lr=0\.0001/fold_0 and lr=1e-05/fold_1 .*must align"):
        build_ensembles(units, ["kappa"])


def test_unknown_weighting_rejected(run_dir):
    with pytest.raises(ValueError, match="known weightings"):
        build_ensembles(discover_units(run_dir), ["kappa", "brier"])


def test_missing_prediction_file_names_the_unit(run_dir):
    (run_dir / "units" / "lr=0.0001" / "fold_2" / "predictions_val.csv").unlink()
    with pytest.raises(MissingPredictionsError) as info:
        discover_units(run_dir)
    message = str(info.value)
    assert "unit lr=0.0001/fold_2" in message
    assert "predictions_val.csv is missing" in message
    assert f"allwen run CONFIG --out {run_dir}" in message
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        ("", "cannot be parsed"),
        ("garbage without columns\n1\n", "lacks columns"),
        ("path,y_true,prob_hem,prob_all\na.bmp,0,0.4,\n", "NaN or outside"),
        ("path,y_true,prob_hem,prob_all\na.bmp,5,0.4,0.6\n", "y_true outside"),
        ("path,y_true,prob_hem,prob_all\na.bmp,x,0.4,0.6\n", "non-numeric"),
    ],
)
def test_garbled_prediction_file_names_the_unit(run_dir, content, problem):
    unit = run_dir / "units" / "lr=0.001" / "fold_1"
    (unit / "predictions_test.csv").write_text(content)
    with pytest.raises(MissingPredictionsError, match=rf"unit lr=0\.001/fold_1: .*{problem}"):
        load_unit_predictions(unit, "lr=0.001", 1)


def test_not_a_run_folder(tmp_path):
    with pytest.raises(ValueError, match="no units/ folder"):
        discover_units(tmp_path)


def test_write_ensemble_round_trips(run_dir, tmp_path):
    results = build_ensembles(discover_units(run_dir), ["kappa", "vote"])
    result = next(r for r in results if r.name == "inter[lr=0.001]/kappa")
    out = write_ensemble(result, tmp_path / "ensembles")
    assert out == tmp_path / "ensembles" / "inter_lr=0.001_kappa"
    assert sorted(p.name for p in out.iterdir()) == ["ensemble.json", "predictions_test.csv"]

    frame = pd.read_csv(out / "predictions_test.csv")
    unit_csv = run_dir / "units" / "lr=0.001" / "fold_0" / "predictions_test.csv"
    assert list(frame.columns) == list(pd.read_csv(unit_csv).columns)
    assert frame["path"].tolist() == TEST_PATHS
    np.testing.assert_array_equal(frame["y_true"], TEST_Y)
    np.testing.assert_allclose(frame[["prob_hem", "prob_all"]].to_numpy(), result.test_proba)

    meta = json.loads((out / "ensemble.json").read_text())
    assert meta["name"] == "inter[lr=0.001]/kappa" and meta["kind"] == "inter"
    assert meta["members"] == [f"lr=0.001/fold_{k}" for k in range(3)]
    assert meta["weights"] == pytest.approx(result.weights)
    assert meta["n_test"] == N_TEST and "test_proba" not in meta


def test_safe_name():
    assert safe_name("intra/kappa") == "intra_kappa"
    assert safe_name("inter[lr=1e-05]/f1") == "inter_lr=1e-05_f1"
    with pytest.raises(ValueError, match="no usable characters"):
        safe_name("//")
