"""Study-aware reports: what a run can fill, and A's four questions only for A-shaped runs."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from allwen.evaluation.results import load_summary
from allwen.evaluation.synthetic import write_synthetic_run
from allwen.pipeline import rebuild_report
from allwen.runfolder import RunFolder

SMALL = dict(n_test=60, n_test_subjects=6, n_pool=120, n_pool_subjects=8, bootstrap=20)
A_QUESTION = "Does any WEN beat the best single model?"


def _run(tmp_path: Path, name: str, **kwargs) -> tuple[Path, str]:
    run_dir = tmp_path / name
    write_synthetic_run(run_dir, **{**SMALL, **kwargs})
    rebuild_report(run_dir)
    return run_dir, RunFolder(run_dir).report_html.read_text(encoding="utf-8")


def _sections(page: str) -> set[str]:
    return set(re.findall(r'id="([^"]+)"', page))


def test_wen_grid_asks_a_questions_and_has_every_common_section(tmp_path):
    run_dir, page = _run(tmp_path, "wen", lrs=(1e-3, 1e-4), folds=3)
    assert A_QUESTION in page
    ids = _sections(page)
    for section in ("grid", "champions", "ensembles", "per-class", "confusion", "samples", "curves"):
        assert section in ids, section
    summary = load_summary(run_dir)
    assert [s.name for s in summary.scenarios] == ["lr=0.001", "lr=0.0001"]
    assert summary.grid_winner in {"lr=0.001", "lr=0.0001"}
    assert summary.scenarios[0].val["accuracy"].sd is not None  # three folds: an sd
    assert summary.model(summary.best_single).per_class[-1].name == "macro average"


def test_grid_reports_its_winner_table_and_charts_and_no_a_question(tmp_path):
    run_dir, page = _run(tmp_path, "grid", lrs=(1e-3,), folds=1,
                         overrides=["scenarios={train.batch_size: [16, 32], train.stage2.epochs: [1, 2, 3]}"])
    summary = load_summary(run_dir)
    assert len(summary.scenarios) == 6 and summary.questions is None
    means = [s.val[summary.grid_metric].mean for s in summary.scenarios]
    assert summary.grid_winner == summary.scenarios[means.index(max(means))].name  # ties: the earlier
    assert A_QUESTION not in page and "Grid winner" in page
    ids = _sections(page)
    assert "grid" in ids and "champions" not in ids and "ensembles" not in ids  # one fold: nothing to combine
    chart = (RunFolder(run_dir).report_figures_dir / "grid_test_accuracy.svg").read_text(encoding="utf-8")
    assert chart.count("<polyline") == 2 and "batch_size: 16" in chart and "batch_size: 32" in chart  # a line each
    raw = json.loads(RunFolder(run_dir).summary_path.read_text())
    first = raw["scenarios"][0]
    assert set(first) >= {"name", "settings", "val", "test"} and set(first["test"]["accuracy"]) == {"mean", "sd"}
    assert first["settings"] == {"train.batch_size": 16, "train.stage2.epochs": 1}


def test_grid_with_folds_draws_the_winners_folds(tmp_path):
    run_dir, page = _run(tmp_path, "folds", lrs=(1e-3, 1e-4), folds=3,
                         overrides=["scenarios={train.lr: [0.001, 0.0001], train.stage2.epochs: [5, 10]}"])
    winners = [m for m in load_summary(run_dir).single_models if m.scenario == load_summary(run_dir).grid_winner]
    roc = (RunFolder(run_dir).report_figures_dir / "grid_winner_roc.svg").read_text(encoding="utf-8")
    assert roc.count("<polyline") == len(winners) == 3  # one ROC curve per fold, labelled with its AUC
    for m in winners:
        assert f"fold {m.fold} (AUC {m.roc.auc:.3f})" in roc
    folds_chart = (RunFolder(run_dir).report_figures_dir / "grid_winner_folds.svg").read_text(encoding="utf-8")
    assert folds_chart.count("<rect") >= 2 + 3 * 4  # D's bar chart: 4 metrics for each of 3 folds
    # C's tables: one per value of the other keys (batch size there, lr here), a row per epoch count,
    # with the kept epoch's training accuracy, mean over folds
    summary = load_summary(run_dir)
    cell = summary.scenarios[0]
    train = [json.loads(RunFolder(run_dir).unit(cell.name, k).info_path.read_text())["train_metrics"]["accuracy"]
             for k in range(3)]
    assert cell.train["accuracy"].mean == pytest.approx(sum(train) / 3)
    grid = page[page.index('id="grid"'):]
    assert "Train accuracy" in grid and grid.index("lr: 0.001") < grid.index("lr: 0.0001")
    assert f"{cell.train['accuracy'].mean:.3f}" in grid


def test_one_fold_runs_build_no_ensembles(tmp_path):
    """B, C and E have one fold: a scenario's only model is no champion, so nothing is combined."""
    from allwen.ensemble.build import build_ensembles
    from allwen.runfolder import RunFolder

    run_dir = tmp_path / "one"
    write_synthetic_run(run_dir, **{**SMALL, "lrs": (1e-3, 1e-4, 1e-5), "folds": 1})
    assert build_ensembles(RunFolder(run_dir).discover_units(), ["accuracy", "uniform", "greedy"]) == []
    rebuild_report(run_dir)
    summary = load_summary(run_dir)
    assert summary.ensembles == [] and summary.champions == [] and summary.best_ensembles == {}
    assert not RunFolder(run_dir).ensembles_dir.exists() or not any(RunFolder(run_dir).ensembles_dir.iterdir())


def test_single_model_reports_its_metrics_without_grid_or_questions(tmp_path):
    run_dir, page = _run(tmp_path, "single", lrs=(1e-3,), folds=1, overrides=["scenarios={}"])
    summary = load_summary(run_dir)
    assert summary.scenarios == [] and summary.grid_winner is None and summary.questions is None
    assert "Single model" in page and A_QUESTION not in page and "champion of" not in page
    ids = _sections(page)
    assert "grid" not in ids and "ensembles" not in ids and "per-class" in ids
    # percent beside counts in the confusion matrices
    assert re.search(r"<td class=\"num\"[^>]*>\d+<br><small>\d+\.\d%</small>", page)
