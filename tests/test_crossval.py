"""``allwen crossval`` end to end on tiny synthetic data: every image tested once, pooled per role."""

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from allwen.cli import app
from allwen.evaluation.metrics import compute_metrics
from allwen.evaluation.results import load_summary
from allwen.evaluation.run import subject_clusters
from allwen.evaluation.stats import bootstrap_ci, class_strata
from allwen.runfolder import RunFolder

runner = CliRunner()


def _args(synth_root, out):
    args = ["crossval", "demo", "--out", str(out), "--quiet"]
    for item in (f"data.path={synth_root / 'training_data'}", "data.image_size=32", "split.folds=2", "split.test=0.34",
                 "train.stage1.epochs=1", "train.stage2=null", "train.batch_size=16", "evaluation.bootstrap=200",
                 "scenarios={train.lr: [0.01, 0.001]}"):
        args += ["--set", item]
    return args


@pytest.fixture(scope="module")
def crossval_dir(synth_root, tmp_path_factory):
    out = tmp_path_factory.mktemp("cv") / "cv"
    result = runner.invoke(app, _args(synth_root, out))
    assert result.exit_code == 0, result.output
    assert "default_export: accuracy" in result.output and "crossval.md" in result.output
    return out


def _pooled(out, role):
    """Hand pooling: each part's chosen model (from its own summary.json) and its saved test predictions."""
    ys, probas, clusters = [], [], []
    for k in range(3):
        run = out / f"test_part_{k}"
        summary = load_summary(run)
        name = {"default_export": summary.default_export, "best_single": summary.best_single}[role]
        folder = RunFolder(run)
        if name in {m.name for m in summary.single_models}:
            unit = folder.unit_predictions_of(name)
            paths, y, p = unit.test_paths, unit.test_y, unit.test_proba
        else:
            paths, y, p = folder.ensemble_test_predictions(name)
        ys.append(np.asarray(y))
        probas.append(np.asarray(p))
        clusters += [f"{k}:{c}" for c in subject_clusters(folder, list(paths))]  # subjects joined by duplicates
    return np.concatenate(ys), np.concatenate(probas), np.asarray(clusters)


def test_every_image_is_tested_once_and_roles_pool_their_parts(crossval_dir):
    data = json.loads((crossval_dir / "crossval.json").read_text())
    tested = []
    for k in range(3):
        split = json.loads(RunFolder(crossval_dir / f"test_part_{k}").split_json.read_text())
        assert split["method"].startswith(f"testpart{k}of3+")
        first = load_summary(crossval_dir / f"test_part_{k}").single_models[0].name
        tested += RunFolder(crossval_dir / f"test_part_{k}").unit_predictions_of(first).test_paths
    assert len(tested) == len(set(tested)) == data["n_test"]
    assert data["statistics"]["unit"] == "subject"
    for role in ("default_export", "best_single"):
        pooled = next(m for m in data["models"] if m["role"] == role)
        y, proba, clusters = _pooled(crossval_dir, role)
        assert len(y) == data["n_test"]
        assert pooled["metrics"]["accuracy"] == pytest.approx(compute_metrics(y, proba)["accuracy"])
        # the interval is a class-stratified cluster bootstrap over every part's test subjects
        ci = bootstrap_ci(y, proba, 200, 0.95, 0, ("accuracy",), clusters, class_strata(y, clusters))["accuracy"]
        assert pooled["metrics"]["ci"]["accuracy"] == pytest.approx(list(ci))
    # the shared cache: one folder, linked from every part
    assert all((crossval_dir / f"test_part_{k}" / "cache").resolve() == (crossval_dir / "cache").resolve()
               for k in range(3))
    page = (crossval_dir / "crossval.md").read_text()
    assert "default export (chosen on validation)" in page and f"{data['n_test']} images" in page


def test_prediction_sets_are_calibrated_on_the_other_parts_and_measured_per_class(crossval_dir):
    """Part p's sets come from a calibration on the other parts' pooled test predictions (crepes' sets), Mondrian."""
    from allwen.evaluation.conformal import calibrate, crepes_sets

    data = json.loads((crossval_dir / "crossval.json").read_text())
    (sets,) = data["prediction_sets"]
    assert sets["role"] == "default_export" and sets["mondrian"] and sets["unit"] == "subject"
    y, proba, clusters = _pooled(crossval_dir, "default_export")
    parts = np.concatenate([np.full(p["n_test"], p["part"]) for p in data["parts"]])
    classes = data["classes"]
    assert [lv["level"] for lv in sets["levels"]] == [0.9, 0.95]
    for lv in sets["levels"]:
        served = np.zeros_like(proba, dtype=bool)
        raw = np.zeros_like(proba, dtype=bool)
        fewest = [10**9] * len(classes)
        for k in range(3):
            cal, held = parts != k, parts == k
            (c,) = calibrate(y[cal], proba[cal], (lv["level"],), mondrian=True, nonempty=True)
            raw[held] = crepes_sets(y[cal], proba[cal], proba[held], lv["level"], True)
            served[held] = raw[held]
            served[held, proba[held].argmax(1)] = True
            fewest = [min(f, len(set(clusters[cal & (y == j)]))) for j, f in enumerate(fewest)]
        assert lv["raw_empty"] == pytest.approx((raw.sum(1) == 0).mean())
        assert lv["coverage"] == pytest.approx(served[np.arange(len(y)), y].mean())
        assert lv["min_calibration_clusters"] == 6  # evaluation.min_clusters
        for j, name in enumerate(classes):
            row = lv["per_class"][name]
            mask = y == j
            assert row["coverage"] == pytest.approx(served[mask, j].mean())
            assert row["raw_coverage"] == pytest.approx(raw[mask, j].mean())
            assert row["mean_size"] == pytest.approx(served[mask].sum(1).mean())
            assert row["accuracy"] == pytest.approx((proba[mask].argmax(1) == j).mean())
            assert row["accuracy"] <= row["coverage"]  # a set holding the predicted class covers at least that
            assert row["calibration_clusters"] == fewest[j]
        short = {n: fewest[j] for j, n in enumerate(classes) if fewest[j] < 6}
        assert short and lv["short"] == short and not lv["supported"]  # three tiny parts: a handful of subjects
    page = (crossval_dir / "crossval.md").read_text()
    assert "## Prediction sets of the default export" in page and "### Level 95%" in page
    assert "**Not supported:** sets need at least 6 calibration subjects per class" in page


def test_running_again_resumes_and_trains_nothing(crossval_dir, synth_root):
    weights = sorted(crossval_dir.glob("test_part_*/units/*/fold_*/weights.safetensors"))
    before = {p: p.stat().st_mtime_ns for p in weights}
    result_before = json.loads((crossval_dir / "crossval.json").read_text())
    result = runner.invoke(app, _args(synth_root, crossval_dir))
    assert result.exit_code == 0, result.output
    assert {p: p.stat().st_mtime_ns for p in weights} == before
    assert json.loads((crossval_dir / "crossval.json").read_text()) == result_before


def test_what_cannot_be_cross_validated_is_refused(synth_root, tmp_path):
    for bad, needle in (("split.test=official", "'official'"), ("split.test_part=1", "sets split.test_part itself")):
        args = _args(synth_root, tmp_path / "x") + ["--set", bad]
        result = runner.invoke(app, args)
        assert result.exit_code == 2 and needle in result.output, result.output
