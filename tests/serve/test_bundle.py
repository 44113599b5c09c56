"""Export and load: a self-contained bundle that predicts what the run predicted, and refuses tampering."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from allwen.bundle import BundleFolder
from allwen.export import export_bundle, open_run, resolve_model
from allwen.serve import load_bundle
from allwen.runfolder import RunFolder, UnitFolder, parse_unit_name

REPO = Path(__file__).resolve().parents[2]


def _probs(frame: pd.DataFrame) -> np.ndarray:
    return frame[[c for c in frame.columns if c.startswith("prob_")]].to_numpy(float)


NEW_PROCESS = """
import json, sys
import allwen
assert "torch" not in sys.modules, "import allwen must stay light"
for bundle, paths, out in json.loads(sys.argv[1]):
    allwen.load_bundle(bundle).predict(paths, calibrate=False).to_csv(out, index=False, float_format="%.10g")
"""


def test_a_new_process_predicts_the_runs_saved_test_probabilities(tiny_run, unit_bundle, ensemble_bundle, tmp_path):
    """For a single unit and an ensemble; one new process for both, since starting torch costs seconds."""
    jobs, expected = [], {}
    for which, bundle in (("unit", unit_bundle), ("ensemble", ensemble_bundle)):
        name = json.loads(BundleFolder(bundle).manifest_path.read_text())["name"]
        saved = RunFolder(tiny_run).unit_dir_of(name) if which == "unit" else RunFolder(tiny_run).ensemble_dir(name)
        expected[which] = pd.read_csv(UnitFolder(saved).predictions("test"))  # an ensemble's file has the same name
        jobs.append([str(bundle), list(expected[which]["path"]), str(tmp_path / f"{which}.csv")])
    env = {"PYTHONPATH": str(REPO / "src"), "HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"}
    result = subprocess.run([sys.executable, "-c", NEW_PROCESS, json.dumps(jobs)], capture_output=True, text=True,
                            env=env, timeout=300)
    assert result.returncode == 0, result.stderr
    for which, frame in expected.items():
        got = pd.read_csv(tmp_path / f"{which}.csv").fillna({"error": ""})
        assert list(got["path"]) == list(frame["path"])
        assert np.abs(_probs(got) - _probs(frame)).max() < 1e-5, which
        assert (got["error"] == "").all()
    got = pd.read_csv(tmp_path / "ensemble.csv")
    members = json.loads(BundleFolder(ensemble_bundle).manifest_path.read_text())["members"]
    assert len(members) == 2 and len([c for c in got.columns if ":prob_" in c]) == 4
    for m in members:  # each member's column is that unit's own saved test prediction
        own = pd.read_csv(RunFolder(tiny_run).unit(*parse_unit_name(m["name"])).predictions("test"))
        assert np.abs(got[[f"{m['name']}:prob_hem", f"{m['name']}:prob_all"]].to_numpy(float) - _probs(own)).max() < 1e-5


def test_bundle_is_self_contained_and_described(unit_bundle, ensemble_bundle, tiny_run, tmp_path):
    moved = tmp_path / "elsewhere"
    shutil.copytree(ensemble_bundle, moved)
    bundle = load_bundle(moved)
    manifest = bundle.manifest.as_json()
    assert manifest["kind"] == "ensemble" and manifest["weighting"] == "uniform"
    assert [m.name for m in bundle.members] == RunFolder(tiny_run).read_ensemble("inter[lr=0.01]/uniform").members
    assert set(manifest["versions"]) >= {"allwen", "timm", "torch"}
    for rel, digest in manifest["files"].items():  # every listed file, as it was exported
        assert hashlib.sha256((moved / rel).read_bytes()).hexdigest() == digest, rel
    assert any(rel.endswith("weights.safetensors") for rel in manifest["files"])
    assert not list(moved.rglob("*.pt")) and not list(moved.rglob("*.pth")) and not list(moved.rglob("*.ckpt"))
    card = BundleFolder(moved).model_card.read_text()
    for needle in ("Not a medical device", "Leakage check", "## Test metrics", "accuracy", "ECE", "reliability.png",
                   "one lab's staining"):
        assert needle in card
    assert manifest["card"]["test"]["ci"]["accuracy"][0] <= manifest["card"]["test"]["metrics"]["accuracy"]
    assert BundleFolder(moved).reliability_png.stat().st_size > 1000
    assert manifest["calibration"]["temperature"] > 0
    onnx = json.loads(BundleFolder(unit_bundle).manifest_path.read_text())["files"]["members/00_lr=0.01_fold_0/model.onnx"]
    assert hashlib.sha256((unit_bundle / "members" / "00_lr=0.01_fold_0" / "model.onnx").read_bytes()).hexdigest() == onnx


def test_a_changed_file_is_refused_with_its_name(unit_bundle, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(unit_bundle, copy)
    weights = next(copy.rglob("weights.safetensors"))
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(ValueError, match=r"weights.safetensors: sha256 differs"):
        load_bundle(copy)
    BundleFolder(copy).manifest_path.write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        load_bundle(copy)


def test_model_names_and_default(tiny_run, tmp_path):
    summary = json.loads(RunFolder(tiny_run).summary_path.read_text())
    folder, recorded = open_run(tiny_run)
    assert resolve_model(folder, recorded, None).name == summary["default_export"]
    champion = resolve_model(folder, recorded, "champion[lr=0.01]")
    assert champion.kind == "unit" and champion.members[0].startswith("lr=0.01/fold_")
    assert resolve_model(folder, recorded, "best_single").members == [summary["best_single"]]
    assert resolve_model(folder, recorded, "inter_lr=0.01_kappa").name == "inter[lr=0.01]/kappa"
    with pytest.raises(ValueError, match=r"no such unit, champion or ensemble.*choose from: .*lr=0.01/fold_0"):
        resolve_model(folder, recorded, "lr=0.5/fold_0")


def test_export_never_overwrites(tiny_run, unit_bundle):
    before = BundleFolder(unit_bundle).manifest_path.read_text()
    with pytest.raises(ValueError, match="already exists; bundles are never overwritten"):
        export_bundle(tiny_run, unit_bundle, "lr=0.01/fold_1")
    assert BundleFolder(unit_bundle).manifest_path.read_text() == before


def test_export_cli_prints_the_bundle(tiny_run, tmp_path):
    from typer.testing import CliRunner

    from allwen.cli import app

    result = CliRunner().invoke(app, ["export", str(tiny_run), "--out", str(tmp_path / "b"), "--model", "lr=0.01/fold_1"])
    assert result.exit_code == 0, result.output
    assert "model: lr=0.01/fold_1 (unit)" in result.output
    assert BundleFolder(tmp_path / "b").model_card.read_text().startswith("# Model card: lr=0.01/fold_1")
    bad = CliRunner().invoke(app, ["export", str(tiny_run), "--out", str(tmp_path / "c"), "--model", "nope"])
    assert bad.exit_code == 2 and "choose from" in bad.output
