"""The run folder: discovery, the one prediction reader/writer, typed records, caching."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from allwen.runfolder import EnsembleRecord, MissingPredictionsError, RunFolder, safe_name, write_predictions
from allwen.runfolder import layout

CLASSES = ["hem", "all"]
N_TEST = 6
TEST_PATHS = [f"/data/test/img_{i:03d}.bmp" for i in range(N_TEST)]
TEST_Y = np.arange(N_TEST) % 2


def _proba(p1) -> np.ndarray:
    p1 = np.asarray(p1, dtype=float)
    return np.stack([1 - p1, p1], axis=1)


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    run = RunFolder(tmp_path / "run")
    rng = np.random.default_rng(0)
    for scenario in ("lr=0.1", "lr=0.01"):
        for fold in (2, 0, 1):  # written out of order: discovery must sort
            unit = run.unit(scenario, fold)
            val_y = np.array([1, 0, 1, 0])
            unit.write_predictions("val", [f"/v/{scenario}_{fold}_{i}" for i in range(4)], val_y,
                                   _proba(rng.uniform(size=4)), CLASSES)
            unit.write_predictions("test", TEST_PATHS, TEST_Y, _proba(rng.uniform(size=N_TEST)), CLASSES)
    (run.units_dir / "lr=0.1" / "notes").mkdir()  # not a fold folder: ignored
    return run.root


def test_discover_units_sorted_by_fold_in_the_asked_order(run_dir):
    units = RunFolder(run_dir).discover_units(verify=False, scenarios=["lr=0.1", "lr=0.01"])
    assert list(units) == ["lr=0.1", "lr=0.01"]
    for scenario, us in units.items():
        assert [u.name for u in us] == [f"{scenario}/fold_{k}" for k in range(3)]
        assert us[0].classes == CLASSES and us[0].test_paths == TEST_PATHS
        assert us[0].val_proba.shape == (4, 2)


def test_predictions_round_trip_through_the_one_writer_and_reader(tmp_path):
    proba = _proba([0.1, 0.123456789, 0.5])
    write_predictions(tmp_path / "p.csv", ["a", "b", "c"], np.array([0, 1, -1]), proba, CLASSES)
    paths, classes, y, back = layout.read_predictions(tmp_path / "p.csv", "u", "fix", allow_unlabelled=True)
    assert paths == ["a", "b", "c"] and classes == CLASSES and y.tolist() == [0, 1, -1]
    np.testing.assert_allclose(back, proba, atol=1e-8)


def test_a_folder_reads_each_file_once(run_dir, monkeypatch):
    folder = RunFolder(run_dir)
    calls = []
    real = layout.read_predictions
    monkeypatch.setattr(layout, "read_predictions", lambda *a, **k: calls.append(a[0]) or real(*a, **k))
    folder.discover_units(verify=False)
    folder.discover_units(verify=False)
    folder.unit_predictions("lr=0.1", 0, verify=False)
    assert len(calls) == len(set(calls)) == 12  # 6 units x (val, test), each read once


def test_missing_prediction_file_names_the_unit(run_dir):
    (run_dir / "units" / "lr=0.01" / "fold_2" / "predictions_val.csv").unlink()
    with pytest.raises(MissingPredictionsError) as info:
        RunFolder(run_dir).discover_units(verify=False)
    message = str(info.value)
    assert "unit lr=0.01/fold_2" in message and "predictions_val.csv is missing" in message
    assert f"allwen run CONFIG --out {run_dir}" in message


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
    (run_dir / "units" / "lr=0.1" / "fold_1" / "predictions_test.csv").write_text(content)
    with pytest.raises(MissingPredictionsError, match=rf"unit lr=0\.1/fold_1: .*{problem}"):
        RunFolder(run_dir).unit_predictions("lr=0.1", 1, verify=False)


def test_not_a_run_folder(tmp_path):
    with pytest.raises(ValueError, match="no units/ folder"):
        RunFolder(tmp_path).discover_units()


def test_write_ensemble_round_trips(run_dir):
    folder = RunFolder(run_dir)
    proba = _proba(np.linspace(0, 1, N_TEST))
    record = EnsembleRecord(name="inter[lr=0.1]/kappa", kind="inter", scenario="lr=0.1", weighting="kappa",
                            members=["lr=0.1/fold_0", "lr=0.1/fold_1"], weights=[0.25, 0.75], classes=CLASSES)
    out = folder.write_ensemble(record, TEST_PATHS, TEST_Y, proba)
    assert out == run_dir / "ensembles" / "inter_lr=0.1_kappa"
    frame = pd.read_csv(out / "predictions_test.csv")
    assert frame["path"].tolist() == TEST_PATHS
    np.testing.assert_allclose(frame[["prob_hem", "prob_all"]].to_numpy(), proba, atol=1e-8)
    back = folder.read_ensemble("inter[lr=0.1]/kappa")
    assert back.members == record.members and back.weights == [0.25, 0.75] and back.n_test == N_TEST
    assert json.loads((out / "ensemble.json").read_text())["files"]["predictions_test.csv"]


def test_safe_name():
    assert safe_name("intra/kappa") == "intra_kappa"
    assert safe_name("inter[lr=1e-05]/f1") == "inter_lr=1e-05_f1"
    with pytest.raises(ValueError, match="no usable characters"):
        safe_name("//")


def test_config_round_trips_through_the_folder(tmp_path):
    from allwen.config import load_config
    from allwen.config.load import ConfigError

    cfg = load_config("experiment_a", ["train.lr=0.5"])
    folder = RunFolder(tmp_path / "run")
    path = folder.write_config(cfg)
    assert path == folder.config_path
    assert folder.load_config().model_dump() == cfg.model_dump()
    assert load_config(path).model_dump() == cfg.model_dump()
    folder.write_scenario_config("lr=0.5", cfg)
    assert folder.scenario_config_yaml("lr=0.5") == cfg.model_dump(mode="json")
    path.write_text("- not a mapping\n")
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        RunFolder(tmp_path / "run").load_config()


def test_split_files_round_trip_and_an_incomplete_split_is_named(tmp_path):
    from allwen.io import RunFileError

    folder = RunFolder(tmp_path)
    frame = pd.DataFrame({"path": ["a.png", "b.png"], "label": ["x", "y"], "fold_0": ["train", "val"]})
    meta = {"method": "m", "settings": {}, "n_test": 0, "folds": [{"train": 1, "val": 1}], "notes": []}
    leakage = [{"fold": 0, "a": "train", "b": "val", "n_a": 1, "n_b": 1, "shared_subjects": 0,
                "shared_duplicate_groups": 0, "examples": []}]
    assert folder.write_split_files(frame, meta, leakage) == folder.split_csv and folder.has_split()
    saved, meta_again, leakage_again = folder.read_split_files("fix it")
    assert saved.to_dict("list") == frame.to_dict("list")
    assert (meta_again, leakage_again) == (meta, leakage)
    assert folder.split_meta() == meta and folder.n_folds() == 1
    folder.split_json.unlink()
    with pytest.raises(RunFileError, match=r"incomplete split \(missing \['split.json'\]\)"):
        folder.read_split_files("fix it")
