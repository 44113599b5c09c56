"""allwen predict: files, folders and globs; bad files get a reason; TTA, Grad-CAM and ONNX."""

from __future__ import annotations

import shutil

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from typer.testing import CliRunner

from allwen import load_bundle
from allwen.cli import app
from allwen.serve.images import expand_inputs
from allwen.runfolder import RunFolder

runner = CliRunner()


@pytest.fixture
def mixed_folder(tmp_path, test_images):
    """Two good cells, a text file named .png, a truncated BMP, an empty file and a too-large image."""
    folder = tmp_path / "in"
    (folder / "sub").mkdir(parents=True)
    shutil.copy(test_images[0], folder / "a.bmp")
    shutil.copy(test_images[1], folder / "sub" / "b.bmp")
    (folder / "text.png").write_text("not an image at all")
    (folder / "truncated.bmp").write_bytes(open(test_images[2], "rb").read()[:200])
    (folder / "empty.jpg").write_bytes(b"")
    Image.new("L", (3000, 3000)).save(folder / "huge.png")
    (folder / "notes.txt").write_text("skipped: not an image suffix")
    return folder


def test_cli_predicts_the_good_files_and_gives_each_bad_one_a_reason(unit_bundle, mixed_folder, tmp_path):
    out = tmp_path / "pred.csv"
    result = runner.invoke(app, ["predict", str(unit_bundle), str(mixed_folder), "--out", str(out), "--max-pixels", "1000000"])
    assert result.exit_code == 0, result.output
    table = pd.read_csv(out).fillna({"error": "", "predicted": ""}).set_index("path")
    assert list(table.columns[:5]) == ["status", "reason", "predicted", "prob_hem", "prob_all"]
    assert "lr=0.01/fold_0:prob_all" in table.columns
    reasons = {p.split("/")[-1]: e for p, e in table["error"].items()}
    assert set(reasons) == {"a.bmp", "b.bmp", "text.png", "truncated.bmp", "empty.jpg", "huge.png"}
    assert reasons["a.bmp"] == reasons["b.bmp"] == ""
    assert "not an image" in reasons["text.png"]
    assert "cannot decode" in reasons["truncated.bmp"] or "truncated" in reasons["truncated.bmp"]
    assert "0 bytes" in reasons["empty.jpg"]
    assert "3000 x 3000 pixels" in reasons["huge.png"]
    good = table[table["error"] == ""]
    assert good["predicted"].isin(["hem", "all"]).all()
    np.testing.assert_allclose(good[["prob_hem", "prob_all"]].sum(axis=1), 1.0, atol=1e-6)
    assert set(table.loc[table["error"] != "", "status"]) == {"unreadable"}
    assert set(table.loc[table["error"] == "", "status"]) <= {"answered", "refer", "out_of_distribution"}
    assert "6 images: " in result.output and "4 unreadable" in result.output


def test_exit_code_is_nonzero_only_when_nothing_was_predicted(unit_bundle, mixed_folder, tmp_path):
    result = runner.invoke(app, ["predict", str(unit_bundle), str(mixed_folder / "text.png"), str(mixed_folder / "nope.bmp"),
                                 "--out", str(tmp_path / "p.csv")])
    assert result.exit_code == 1
    assert "2 images: 0 answered, 0 referred, 0 out of distribution, 2 unreadable" in result.output
    assert "no such file" in result.output


def test_globs_and_folders_expand(mixed_folder):
    assert [p.split("/")[-1] for p in expand_inputs([str(mixed_folder / "**" / "*.bmp")])] == ["a.bmp", "b.bmp", "truncated.bmp"]
    assert len(expand_inputs([mixed_folder])) == 6  # notes.txt is not an image name
    assert expand_inputs([str(mixed_folder / "*.gif")]) == [str(mixed_folder / "*.gif")]  # kept, to get a reason


def test_python_api_takes_images_and_calibration_changes_only_confidence(ensemble_bundle, test_images):
    bundle = load_bundle(ensemble_bundle)
    images = [Image.open(p).convert("RGB") for p in test_images[:4]]
    raw = bundle.predict(images, calibrate=False)
    cal = bundle.predict(images, calibrate=True)
    assert list(raw["path"]) == ["<image 0>", "<image 1>", "<image 2>", "<image 3>"]
    assert (raw["predicted"] == cal["predicted"]).all()
    if abs(bundle.temperature - 1) > 1e-3:
        assert not np.allclose(raw["prob_all"], cal["prob_all"])
    from_files = bundle.predict(test_images[:4], calibrate=False)
    np.testing.assert_allclose(from_files["prob_all"], raw["prob_all"], atol=1e-6)


def test_tta_is_invariant_to_rotating_the_cell(unit_bundle, test_images, tmp_path):
    image = Image.open(test_images[0]).convert("RGB")
    turned = image.transpose(Image.Transpose.ROTATE_90).transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    bundle = load_bundle(unit_bundle)
    a, b = bundle.predict([image, turned], tta=True, calibrate=False)[["prob_all"]].to_numpy()[:, 0]
    assert abs(a - b) < 1e-5


def test_onnx_runtime_matches_pytorch(unit_bundle, test_images):
    bundle = load_bundle(unit_bundle)
    torch_p = bundle.predict(test_images, runtime="torch")
    onnx_p = bundle.predict(test_images, runtime="onnx")
    cols = ["prob_hem", "prob_all"]
    assert np.abs(torch_p[cols].to_numpy() - onnx_p[cols].to_numpy()).max() < 1e-4
    assert bundle.manifest.onnx.max_abs_diff_vs_torch < 1e-4


def test_onnx_runtime_needs_an_onnx_export(ensemble_bundle, test_images):
    with pytest.raises(ValueError, match="no ONNX members"):
        load_bundle(ensemble_bundle, runtime="onnx")
    assert load_bundle(ensemble_bundle).runtime == "torch"  # auto: torch when the bundle has no ONNX


def test_explain_writes_an_overlay_per_image_weighting_members(ensemble_bundle, test_images, tmp_path):
    bundle = load_bundle(ensemble_bundle)
    table = bundle.predict(test_images[:2] + [test_images[0]], explain_dir=tmp_path / "cams")
    paths = list(table["explanation"])
    assert len(set(paths)) == 3  # same file name twice: no overwrite
    for path, source in zip(paths, test_images[:2] + [test_images[0]]):
        overlay = Image.open(path)
        assert overlay.size == Image.open(source).size and overlay.mode == "RGB"


def test_ensemble_maps_are_the_members_maps_averaged_with_the_ensemble_weights(ensemble_bundle, test_images):
    import cv2
    import torch

    from allwen.serve.explain import combined_cams, member_cams

    bundle = load_bundle(ensemble_bundle)
    cpu = torch.device("cpu")

    def own_maps(image, target):
        return [cv2.resize(member_cams(m.model(), m.transform(image)[None], [target])[0], image.size) for m in bundle.members]

    # a tiny random network's map can be empty (all gradients negative): take a case where neither is
    cases = ((im, t, own_maps(im, t)) for im in (Image.open(p).convert("RGB") for p in test_images) for t in (0, 1))
    image, target, own = next(case for case in cases if all(m.std() > 0 for m in case[2]))
    assert not np.allclose(own[0], own[1])  # the members look at different places
    np.testing.assert_allclose(combined_cams(bundle, [image], np.array([target]), cpu)[0], (own[0] + own[1]) / 2, atol=1e-5)
    first = bundle.members[0]
    first.weight, saved = 0.0, first.weight  # a member weighted 0 adds nothing
    try:
        np.testing.assert_allclose(combined_cams(bundle, [image], np.array([target]), cpu)[0], own[1], atol=1e-5)
    finally:
        first.weight = saved


def test_run_report_tests_each_unit_with_tta_against_itself(tiny_run):
    """evaluation.tta: the summary pairs every unit's 8-view predictions with its plain ones, and the
    report's TTA table shows the accuracy difference and the paired test."""
    from allwen.evaluation.metrics import predict_labels
    from allwen.evaluation.results import load_summary

    summary = load_summary(tiny_run)
    pairs = [c for c in summary.comparisons.tta_vs_plain if c.metric == "accuracy"]
    assert sorted((c.a, c.b) for c in pairs) == [(f"lr=0.01/fold_{k}+tta", f"lr=0.01/fold_{k}") for k in (0, 1)]
    unit = RunFolder(tiny_run).unit_dir("lr=0.01", 0)
    plain, tta = (pd.read_csv(unit / name) for name in ("predictions_test.csv", "predictions_test_tta.csv"))
    right = [predict_labels(f[[c for c in f if c.startswith("prob_")]].to_numpy()) == f["y_true"].to_numpy() for f in (plain, tta)]
    first = next(c for c in pairs if c.b == "lr=0.01/fold_0")
    assert first.diff == pytest.approx(float(np.mean(right[1]) - np.mean(right[0])))
    assert first.test in {"mcnemar", "permutation"} and 0.0 <= first.p <= 1.0 and first.p_holm >= first.p
    page = RunFolder(tiny_run).report_html.read_text(encoding="utf-8")
    assert "TTA - plain accuracy" in page and f"{first.diff:+.3f}" in page
