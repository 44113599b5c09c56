"""The report of a synthetic finished run: answers first, one summary table, forest plot, details folded."""

from __future__ import annotations

import csv
import html
import json
import re
from pathlib import Path

import pytest

from allwen.evaluation.results import load_summary
from allwen.evaluation.synthetic import MULTI_CLASSES, write_synthetic_run
from allwen.pipeline import rebuild_report
from allwen.report import build_report
from allwen.report.questions import answer_questions
from allwen.runfolder import RunFolder

DETAILS = ["config", "data", "split", "single-models", "champions", "ensembles", "tests", "roc", "confusion", "curves"]
METRICS = ["accuracy", "balanced_accuracy", "precision", "recall", "specificity", "f1", "kappa", "auc"]
SMALL = dict(n_test=120, n_test_subjects=8, n_pool=240, n_pool_subjects=12, lrs=(1e-3, 1e-4), folds=3, bootstrap=200)


def visible_text(page: str) -> str:
    page = re.sub(r"<style>.*?</style>", "", page, flags=re.S)
    page = re.sub(r"<svg.*?</svg>", "", page, flags=re.S)
    return html.unescape(re.sub(r"\s+", " ", re.sub(r"<[^>]+>", "", page)))


@pytest.fixture(scope="module")
def binary_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run_dir = tmp_path_factory.mktemp("report") / "run"
    write_synthetic_run(run_dir, **SMALL)
    rebuild_report(run_dir)
    return run_dir


def test_first_screen_answers_then_summary_then_forest_then_folded_details(binary_run: Path) -> None:
    summary = load_summary(binary_run)
    page = RunFolder(binary_run).report_html.read_text(encoding="utf-8")
    answers, summary_at, details_at = page.index('id="questions"'), page.index('id="summary"'), page.index("<details")
    assert answers < summary_at < details_at
    first = visible_text(page[:details_at])
    answers = answer_questions(summary)
    assert len(answers) == 4
    for q in answers:
        assert q.question in first and q.answer in first
    for role, model in summary.headline_models():
        ci = model.metrics.interval("accuracy")
        assert role in first and f"{model.metrics.accuracy:.3f} [{ci[0]:.3f}, {ci[1]:.3f}]" in first
    assert "cluster bootstrap over 8 test subjects" in first and "permutation over 8 test subjects" in first
    forest = page[summary_at:details_at]
    assert forest.count("<svg") == 1 and "test accuracy" in forest and "test kappa" in forest
    for model in summary.single_models + summary.ensembles:  # every model in the forest plot
        assert f"<title>{html.escape(model.name)}: {model.metrics.accuracy:.3f}" in forest
    for section in DETAILS:
        assert re.search(rf'<details id="{section}">', page), section


def test_report_is_self_contained(binary_run: Path) -> None:
    page = RunFolder(binary_run).report_html.read_text(encoding="utf-8")
    assert 'src="http' not in page and "<link" not in page and "<script" not in page
    images = re.findall(r'<img src="([^"]+)"', page)
    assert len(images) == 6 and all(src.startswith("data:image/png;base64,") for src in images)  # unit curves
    # forest + ROC + accuracy-coverage, and the grid's: test accuracy vs lr, the winner's per-fold metrics and ROC;
    # A's questions: the ROC of every model (issue 28)
    assert page.count("<svg") == 7
    assert (RunFolder(binary_run).report_figures_dir / "forest.svg").read_text().startswith("<svg")


def test_weight_tables_say_when_a_weighting_is_uniform_in_effect(binary_run: Path) -> None:
    summary = load_summary(binary_run)
    text = visible_text(RunFolder(binary_run).report_html.read_text(encoding="utf-8"))
    weighted = [e for e in summary.ensembles if e.weighting not in ("uniform", "vote")]
    same = [e for e in weighted if e.spread.indistinguishable_from_uniform]
    assert f"{len(same)} of {len(weighted)} score- or greedy-weighted ensembles" in text
    assert text.count("indistinguishable from uniform") >= len(same) + 1
    for e in summary.ensembles:
        assert f"{e.spread.min:.3f}-{e.spread.max:.3f}" in text
        if e.weighting == "uniform":
            assert e.spread.max_deviation == pytest.approx(0.0) and e.spread.indistinguishable_from_uniform


def test_metrics_csv_matches_summary(binary_run: Path) -> None:
    summary = load_summary(binary_run)
    with open(RunFolder(binary_run).metrics_csv, newline="") as handle:
        rows = list(csv.DictReader(handle))
    models = summary.single_models + summary.champions + summary.ensembles
    assert len(rows) == len(models) == 6 + 2 + (2 + 1) * 6 + 1
    assert list(rows[0])[:6] == ["group", "name", "kind", "scenario", "fold", "weighting"]
    for row, model in zip(rows, models):
        assert row["name"] == model.name
        for key in METRICS:
            assert float(row[key]) == model.metrics.value(key)
            lo, hi = model.metrics.interval(key)
            assert float(row[f"{key}_lo"]) == lo and float(row[f"{key}_hi"]) == hi
    assert rows[-1]["kind"] == "scenarios" and rows[-1]["weighting"] == "greedy"


def test_markdown_says_the_same(binary_run: Path) -> None:
    summary = load_summary(binary_run)
    md = RunFolder(binary_run).report_md.read_text(encoding="utf-8")
    assert md.index("## Answers") < md.index("## Summary") < md.index("# Details")
    for question in answer_questions(summary):
        assert f"**{question.question}**" in md and question.answer in md
    assert "](figures/forest.svg)" in md and "](figures/roc.svg)" in md
    assert "](../units/lr=0.001/fold_0/curves.png)" in md
    assert "| Role | Model | Accuracy |" in md
    assert "base64" not in md


def test_summary_is_validated_with_a_clear_error(binary_run: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=re.escape(str(RunFolder(tmp_path).summary_path))) as err:
        build_report(tmp_path)
    assert "allwen run" in str(err.value) and "allwen report" in str(err.value)
    data = json.loads(RunFolder(binary_run).summary_path.read_text())
    data["ensembles"][0]["weights"] = "heavy"
    RunFolder(tmp_path).report_dir.mkdir()
    RunFolder(tmp_path).summary_path.write_text(json.dumps(data))
    with pytest.raises(ValueError, match=r"not a valid allwen summary .*ensembles\.0\.weights"):
        build_report(tmp_path)


def test_test_set_selection_is_flagged(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    write_synthetic_run(run_dir, **SMALL, overrides=["ensemble.champion_by=test", "ensemble.weightings=[kappa]"])
    rebuild_report(run_dir)
    text = visible_text(RunFolder(run_dir).report_html.read_text(encoding="utf-8"))
    assert "champions were selected on the TEST set, as in the original study" in text
    summary = load_summary(run_dir)
    assert summary.selection.test_set_selection and [e.weighting for e in summary.ensembles] == ["kappa"] * 3


def test_multiclass_run_without_subjects_reports_over_images(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    write_synthetic_run(run_dir, **SMALL, classes=MULTI_CLASSES, subjects=False)
    rebuild_report(run_dir)
    summary = load_summary(run_dir)
    assert summary.evaluation.unit == "image" and summary.evaluation.n_subjects is None
    rows = summary.comparisons.best_single_vs_ensembles
    assert {c.test for c in rows if c.metric in ("accuracy", "auc")} == {"mcnemar"}  # DeLong is binary
    assert {c.test for c in rows if c.metric not in ("accuracy", "auc")} == {"swap"}  # A's other metrics (issue 28)
    page = RunFolder(run_dir).report_html.read_text(encoding="utf-8")
    text = visible_text(page)
    assert "multi-class" in text and "bootstrap over 120 test images" in text and "McNemar" in text
    for name in MULTI_CLASSES:
        assert f"{name} vs rest" in page  # one ROC panel per class
    assert page.count('<table class="confusion">') == 2 + 3  # champions + best of each kind
