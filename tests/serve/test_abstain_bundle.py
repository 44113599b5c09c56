"""Issue 21 end to end on a finished run: export, card, CSV, API and per-folder verdicts agree."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from allwen.cli import app
from allwen.runfolder import RunFolder
from allwen.bundle import BundleFolder

runner = CliRunner()
FIELDS = ["refer", "ood_score", "ood"]


@pytest.fixture(scope="module")
def cards(ensemble_bundle):
    manifest = json.loads(BundleFolder(ensemble_bundle).manifest_path.read_text())
    return manifest, json.loads(BundleFolder(ensemble_bundle).card_json.read_text())


def test_bundle_has_the_sections_and_the_card_the_evidence(ensemble_bundle, cards):
    manifest, card = cards
    assert manifest["selective"]["target_accuracy"] == 0.99
    # sets are calibrated on the test side, one or two subjects per class here: both levels withheld, and why
    assert manifest["conformal"]["levels"] == []
    assert [w["level"] for w in manifest["conformal"]["withheld"]] == [0.9, 0.95]
    assert "sets need at least 6 calibration subjects per class" in manifest["conformal"]["withheld"][0]["reason"]
    assert [e["level"] for e in card["conformal"]] == [0.9, 0.95] and all("withheld" in e for e in card["conformal"])
    assert manifest["ood"]["method"] == "mahalanobis" and BundleFolder(ensemble_bundle).ood.is_file()
    assert "ood.safetensors" in manifest["files"]
    assert manifest["patient"]["positive_classes"] == ["all"]
    assert {"coverage", "coverage_ci", "accuracy", "accuracy_ci", "curve"} <= set(card["selective"])
    text = BundleFolder(ensemble_bundle).model_card.read_text()
    assert "**Prediction sets: none.**" in text and "90%: sets need at least 6 calibration subjects" in text
    assert "## When not to answer" in text and "coverage.png" in text and BundleFolder(ensemble_bundle).coverage_png.is_file()


@pytest.fixture(scope="module")
def reachable_bundle(tiny_run, tmp_path_factory):
    """A unit bundle with a target the one-epoch tiny model can reach on its validation fold."""
    from allwen.export import AbstainSettings, export_bundle

    return export_bundle(tiny_run, tmp_path_factory.mktemp("b") / "reach", "lr=0.01/fold_1",
                         abstain=AbstainSettings(target_accuracy=0.7, n_boot=200))


@pytest.fixture(scope="module")
def default_bundle(tiny_run, tmp_path_factory):
    """What `allwen export RUN` writes without --model (the run's default_export)."""
    from allwen.export import export_bundle

    return export_bundle(tiny_run, tmp_path_factory.mktemp("b") / "default", fmt="safetensors")


@pytest.mark.parametrize("which", ["ensemble_bundle", "reachable_bundle", "default_bundle"])
def test_test_side_reaches_the_levels_within_the_card_intervals(tiny_run, which, request):
    """Recomputed from the run's saved test predictions: the card's numbers, and the level inside its interval."""
    from allwen.evaluation import selective
    from allwen.serve.bundle import load_bundle
    from allwen.serve.calibration import apply_temperature
    from allwen.export.choice import member_predictions
    from allwen.runfolder import RunFolder

    path = request.getfixturevalue(which)
    manifest = json.loads(BundleFolder(path).manifest_path.read_text())
    card = json.loads(BundleFolder(path).card_json.read_text())
    bundle = load_bundle(path)
    preds = member_predictions(RunFolder(tiny_run), [m.name for m in bundle.members])
    proba = bundle.ensemble.predict_proba([apply_temperature(p.test_proba, bundle.temperature) for p in preds])
    y = preds[0].test_y
    assert manifest["conformal"]["levels"] == []  # too few test subjects: no sets (tests/export/test_sets.py)
    sel = card["selective"]
    accepted = ~selective.refer_mask(proba, manifest["selective"]["threshold"])
    assert sel["n_accepted"] == int(accepted.sum())
    if which == "reachable_bundle":
        assert manifest["selective"]["achieved"] and sel["n_accepted"] > 0
    if sel["n_accepted"]:
        assert sel["accuracy"] == pytest.approx((proba.argmax(1) == y)[accepted].mean())
        assert sel["accuracy_ci"][0] <= sel["accuracy"] <= sel["accuracy_ci"][1]
        assert sel["accuracy_ci"][1] >= sel["target_accuracy"]


def test_a_unit_bundle_is_calibrated_on_its_recipe_over_every_fold(tiny_run, reachable_bundle):
    """Not on the member's own validation fold (where it was chosen): on every fold's model of its scenario."""
    from allwen.runfolder import RunFolder
    from allwen.export.sections import recipe_units

    manifest = json.loads(BundleFolder(reachable_bundle).manifest_path.read_text())
    truth = RunFolder(tiny_run).split_truth().columns
    pool = int(sum(truth["fold_0"] != "test"))  # every training-pool image once
    assert [m["name"] for m in manifest["members"]] == ["lr=0.01/fold_1"]
    units, weights = recipe_units(RunFolder(tiny_run), ["lr=0.01/fold_1"], [1.0])
    assert [u.name for u in units] == ["lr=0.01/fold_0", "lr=0.01/fold_1"] and weights == [1.0, 1.0]
    assert sum(len(u.val_y) for u in units) == pool
    assert manifest["selective"]["validation"]["n"] == pool
    assert "recipe" in manifest["selective"]["fitted_on"] and "test side" in manifest["conformal"]["fitted_on"]


def test_csv_api_and_card_agree_on_every_field_name(ensemble_bundle, cards, test_images, tmp_path):
    from fastapi.testclient import TestClient

    from allwen.serve.app import create_app

    manifest, card = cards
    out = tmp_path / "p.csv"
    result = runner.invoke(app, ["predict", str(ensemble_bundle), *test_images[:3], "--out", str(out)])
    assert result.exit_code == 0, result.output
    table = pd.read_csv(out, keep_default_na=False, dtype=str)
    assert [lv["column"] for lv in manifest["conformal"]["levels"]] == []
    assert [c for c in table.columns if c in FIELDS] == FIELDS and not [c for c in table.columns if c.startswith("set_")]
    with TestClient(create_app(ensemble_bundle)) as client:
        files = [("files", (f"c{i}.bmp", open(p, "rb").read(), "image/bmp")) for i, p in enumerate(test_images[:3])]
        body = client.post("/api/predict", files=files).json()
        model = client.get("/api/model").json()
    for row, res in zip(table.to_dict("records"), body["results"]):
        assert set(FIELDS) <= set(res)
        assert res["refer"] == (row["refer"] == "True") and res["ood"] == (row["ood"] == "True")
        assert res.get("set_90") is None and res.get("set_95") is None  # no set, not an empty one
        assert res["ood_score"] == pytest.approx(float(row["ood_score"]), rel=1e-6)
    assert model["card"]["conformal"] == card["conformal"] and model["selective"] == manifest["selective"]


def test_by_folder_verdicts_match_a_hand_computation(tiny_run, ensemble_bundle, cards, tmp_path):
    """Copy each test subject's cells into its own folder; the verdicts equal pandas on the cell CSV."""
    from scipy.stats import binomtest

    manifest, _ = cards
    split = pd.read_csv(RunFolder(tiny_run).split_csv)
    test = split[split["fold_0"] == "test"]
    for _, row in test.iterrows():
        folder = tmp_path / "patients" / f"subject_{row['subject']}"
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copy(row["path"], folder)
    out = tmp_path / "cells.csv"
    result = runner.invoke(app, ["predict", str(ensemble_bundle), str(tmp_path / "patients"), "--out", str(out),
                                 "--by-folder"])
    assert result.exit_code == 0, result.output
    assert "Research software" in result.output
    cells = pd.read_csv(out, keep_default_na=False, dtype=str)
    verdicts = pd.read_csv(tmp_path / "cells_patients.csv")
    cells["patient"] = [str(p.rsplit("/", 1)[0]) for p in cells["path"]]
    assert len(verdicts) == test["subject"].nunique()
    threshold = manifest["patient"]["threshold"]
    # one status per cell, the same record as the flags: out of distribution wins over refer
    expected = ["out_of_distribution" if o == "True" else "refer" if r == "True" else "answered"
                for o, r in zip(cells["ood"], cells["refer"])]
    assert list(cells["status"]) == expected
    for _, v in verdicts.iterrows():
        mine = cells[cells["patient"] == v["patient"]]
        answered = mine[mine["status"] == "answered"]  # the call counts answered cells only
        k, n, m = int((answered["predicted"] == "all").sum()), len(mine), len(answered)
        assert (v["n_cells"], v["n_answered"], v["n_called_all"]) == (n, m, k)
        assert v["n_refer"] == (mine["refer"] == "True").sum() and v["n_ood"] == (mine["ood"] == "True").sum()
        if m == 0 or m < 0.5 * n:
            assert v["call"] == "no call" and v["note"].startswith("cannot call")
            continue
        ci = binomtest(k, m).proportion_ci(method="wilson")
        assert v["share_all"] == pytest.approx(k / m)
        assert (v["share_all_low"], v["share_all_high"]) == pytest.approx((ci.low, ci.high), abs=1e-6)
        assert v["mean_prob_all"] == pytest.approx(answered["prob_all"].astype(float).mean(), abs=1e-6)
        assert v["call"] == ("ALL" if k / m >= threshold else "not ALL")


def test_a_tampered_section_is_refused_at_load(ensemble_bundle, tmp_path):
    from allwen.serve.bundle import load_bundle

    copy = tmp_path / "b"
    shutil.copytree(ensemble_bundle, copy)
    manifest = json.loads(BundleFolder(copy).manifest_path.read_text())
    manifest["selective"]["threshold"] = 2.0
    BundleFolder(copy).manifest_path.write_text(json.dumps(manifest))
    with pytest.raises(ValueError, match=r"field selective\.threshold"):
        load_bundle(copy)
