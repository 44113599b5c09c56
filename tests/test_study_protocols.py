"""Issue 18 end to end on tiny synthetic data: Experiment C as it was run (validation = test),
the kept model's evaluated training accuracy, the resolved pretrained tag and the paper's averaging."""

import json

import numpy as np
import pandas as pd
import pytest
import yaml

from allwen.config import load_config
from allwen.evaluation.results import load_summary
from allwen.pipeline import run_pipeline
from allwen.runfolder import RunFolder, UnitFolder
from allwen.bundle import BundleFolder


@pytest.fixture(scope="module")
def c_as_run(synth_root, tmp_path_factory):
    cfg = load_config("experiment_c_as_run", [
        f"data.path={synth_root / 'training_data'}", "data.image_size=32", "model.backbone=test_efficientnet",
        "model.pretrained_tag=null", "model.weights=none", "model.head=softmax", "model.dropout=0.0",
        "scenarios={train.batch_size: [16], train.stage2.epochs: [1, 2]}", "evaluation.bootstrap=50",
    ])
    out = tmp_path_factory.mktemp("c_as_run") / "run"
    run_pipeline(cfg, out, quiet=True)
    return out


def test_the_test_side_is_the_validation_set_and_training_holds_the_rest(c_as_run):
    split = pd.read_csv(RunFolder(c_as_run).split_csv, keep_default_na=False)
    assert set(split["fold_0"]) == {"train", "test"}  # no separate validation images
    meta = json.loads(RunFolder(c_as_run).split_json.read_text())
    assert meta["folds"] == [{"train": int((split["fold_0"] == "train").sum()), "val": meta["n_test"]}]
    assert meta["method"].endswith("/val=test") and any("also the validation set" in n for n in meta["notes"])
    for scenario in ("batch_size=16_epochs=1", "batch_size=16_epochs=2"):
        unit = RunFolder(c_as_run).units_dir / scenario / "fold_0"
        val, test = pd.read_csv(UnitFolder(unit).predictions("val")), pd.read_csv(UnitFolder(unit).predictions("test"))
        assert list(val["path"]) == list(test["path"])
        # the kept model is the same on both: its validation and test probabilities agree
        probs = [c for c in val if c.startswith("prob_")]
        assert np.abs(val[probs].to_numpy() - test[probs].to_numpy()).max() < 1e-5
    summary = load_summary(c_as_run)
    assert summary.selection.test_set_selection  # chosen on the test images: the report says so
    page = RunFolder(c_as_run).report_html.read_text(encoding="utf-8")
    assert "selected on the TEST set" in page


def test_train_eval_accuracy_is_the_kept_model_on_its_training_images(c_as_run):
    """unit.json's train_eval_accuracy, the summary and C's grid table agree; it is the eval-mode
    accuracy on the training rows, beside (not equal to) the running accuracy of the last epoch."""
    summary = load_summary(c_as_run)
    for model in summary.single_models:
        info = json.loads(RunFolder(c_as_run).unit(model.scenario, 0).info_path.read_text())
        assert 0.0 <= info["train_eval_accuracy"] <= 1.0
        assert model.train_eval_accuracy == pytest.approx(info["train_eval_accuracy"])
        # a k/n fraction of the training images
        n_train = info["n_train"]
        assert round(info["train_eval_accuracy"] * n_train) == pytest.approx(info["train_eval_accuracy"] * n_train)
    row = summary.scenarios[0]
    assert row.train_eval_accuracy.mean == pytest.approx(summary.single_models[0].train_eval_accuracy)
    page = RunFolder(c_as_run).report_html.read_text(encoding="utf-8")
    grid = page[page.index('id="grid"'):]
    assert "Train accuracy (evaluated)" in grid and "Train accuracy (running)" in grid
    assert f"{row.train_eval_accuracy.mean:.3f}" in grid


def test_resolved_tag_is_in_the_run_folder(c_as_run):
    saved = yaml.safe_load(RunFolder(c_as_run).config_path.read_text())
    assert saved["model"]["pretrained_tag"] == "r160_in1k"  # null resolved to timm's default for the backbone
    info = json.loads((RunFolder(c_as_run).unit("batch_size=16_epochs=1", 0).info_path).read_text())
    assert info["pretrained_tag"] == "r160_in1k"


def test_macro_averaging_in_the_headline_and_grid(c_as_run):
    """C averages P/R/F1 over the two classes: the summary says macro, the tables show the macro columns."""
    summary = load_summary(c_as_run)
    assert summary.average == "macro"
    best = summary.model(summary.best_single).metrics
    assert best.precision_macro is not None and best.f1_macro is not None
    page = RunFolder(c_as_run).report_html.read_text(encoding="utf-8")
    assert "Precision (macro)" in page and "F1 (macro)" in page
    grid = page[page.index('id="grid"'):]
    assert "Test Recall (macro)" in grid


def test_paper_comparison_sets_the_papers_numbers_beside_this_runs(c_as_run):
    """summary.json's paper_comparison: each number of the preset's paper: block with this run's value
    of the same metric (the best single model), its interval and whether the paper's value is inside."""
    from allwen.evaluation.paper import paper_facts
    from allwen.pipeline import load_run_config

    summary = load_summary(c_as_run)
    raw = json.loads(RunFolder(c_as_run).summary_path.read_text())
    assert [r["metric"] for r in raw["paper_comparison"]] == ["accuracy", "precision_macro", "recall_macro", "f1_macro"]
    assert {"metric", "paper", "run", "low", "high", "inside"} <= set(raw["paper_comparison"][0])
    best = summary.model(summary.best_single).metrics
    for row in summary.paper_comparison:
        assert row.model == summary.best_single
        assert row.run == pytest.approx(best.value(row.metric))
        assert (row.low, row.high) == tuple(best.interval(row.metric))
        assert row.inside == (row.low <= row.paper <= row.high)
    assert [r.paper for r in summary.paper_comparison] == [0.96, 0.96, 0.94, 0.95]
    aspects = {a.aspect: (a.paper, a.run, a.same) for a in summary.paper_protocol.aspects}
    assert aspects["split"] == ("image", "image", True)
    assert aspects["selected_on"] == ("test", "test", True)  # validation = test, as the paper ran it
    assert aspects["average"] == ("macro", "macro", True)
    assert aspects["test_images"] == ("706", str(summary.evaluation.n_test), False)
    # a paper value outside the run's interval is said so
    cfg = load_run_config(c_as_run)
    cfg.paper.numbers[0].value = 1.0 if best.interval("accuracy")[1] < 1.0 else 0.0
    rows, _ = paper_facts(cfg, summary)
    assert rows[0].inside is False


def test_report_opens_its_summary_with_paper_vs_this_run(c_as_run):
    page = RunFolder(c_as_run).report_html.read_text(encoding="utf-8")
    assert "Paper vs this run" in page
    assert page.index("Paper vs this run") < page.index("best single model (by")
    assert "What differs between the two protocols" in page and "reported model chosen on" in page
    from allwen.report.headline import headline_markdown

    md = headline_markdown(c_as_run)
    assert "### Paper vs this run" in md and "| precision_macro | 0.960 |" in md


def test_bundle_and_model_card_name_the_pretrained_tag(c_as_run, tmp_path):
    import allwen

    bundle = allwen.export_bundle(c_as_run, tmp_path / "bundle")
    manifest = json.loads(BundleFolder(bundle).manifest_path.read_text())
    assert {m["pretrained_tag"] for m in manifest["members"]} == {"r160_in1k"}
    card = BundleFolder(bundle).model_card.read_text()
    assert "pretrained weights (timm tag)" in card and "| r160_in1k |" in card


def test_a_run_resumes_with_other_paper_numbers_and_reports_them(c_as_run, synth_root, tmp_path):
    """The paper: block trains nothing: a finished run resumes with a corrected number (no
    retraining, no refusal), and its summary sets the new number beside the same results."""
    import shutil

    from allwen.pipeline import load_run_config

    run = tmp_path / "run"
    shutil.copytree(c_as_run, run)
    cfg = load_run_config(run)
    cfg.paper.numbers[0].value = 0.5
    before = {p: p.stat().st_mtime_ns for p in (u.weights for u in RunFolder(run).units_on_disk() if u.path.name == "fold_0" and u.weights.is_file())}
    run_pipeline(cfg, run, quiet=True)
    assert load_summary(run).paper_comparison[0].paper == 0.5
    assert before == {p: p.stat().st_mtime_ns for p in (u.weights for u in RunFolder(run).units_on_disk() if u.path.name == "fold_0" and u.weights.is_file())}
    changed = load_run_config(run)
    changed.train.lr = 0.5
    with pytest.raises(ValueError, match="another config"):
        run_pipeline(changed, run, quiet=True)


def test_c_report_shows_clahe_samples_and_feature_maps(c_as_run):
    """Issue 28: C's Gambar 3 (original vs CLAHE, after the resize as its paper orders it) and Gambar 4."""
    page = RunFolder(c_as_run).report_html.read_text(encoding="utf-8")
    assert 'id="clahe"' in page and "CLAHE after the resize" in page
    figures = RunFolder(c_as_run).report_figures_dir
    pairs = sorted(figures.glob("clahe_*.png"))
    assert pairs and 'id="feature-maps"' in page and (figures / "feature_maps.png").is_file()
    from PIL import Image

    with Image.open(pairs[0]) as pair:
        assert pair.width == 2 * pair.height + 4  # original | enhanced, side by side
