"""Issue 28: each study's report asks its own questions. A: the learning rate over all folds (cluster
swap test, five metrics), the study's WENs in their own Holm family (baselines outside), every model's
ROC, test-selected intra weights as a named option, the best weighting by the champion rule; C and D:
the grid only; the paper block names what the paper reported and sets the same thing beside it."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from allwen.evaluation.results import load_summary
from allwen.evaluation.synthetic import write_synthetic_run
from allwen.pipeline import rebuild_report
from allwen.runfolder import RunFolder

SMALL = dict(n_test=60, n_test_subjects=6, n_pool=120, n_pool_subjects=8, bootstrap=20)
A_QUESTION = "Does any WEN beat the best single model?"
FIVE = {"accuracy", "precision", "recall", "f1", "kappa"}


def _run(tmp_path: Path, name: str, **kwargs) -> tuple[Path, str]:
    run_dir = tmp_path / name
    write_synthetic_run(run_dir, **{**SMALL, **kwargs})
    rebuild_report(run_dir)
    return run_dir, RunFolder(run_dir).report_html.read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def a_run(tmp_path_factory):
    return _run(tmp_path_factory.mktemp("a"), "a", lrs=(1e-3, 1e-4, 1e-5), folds=3, overrides=[
        "evaluation.questions=wen", "ensemble.weightings=[accuracy, f1, kappa, uniform, vote]"])


def test_a_asks_the_learning_rate_over_all_folds_in_five_metrics(a_run):
    run_dir, page = a_run
    s = load_summary(run_dir)
    rows = s.comparisons.lr_folds
    assert {r.metric for r in rows} == FIVE and {r.test for r in rows} == {"swap"}
    assert len(rows) == 3 * 5  # three pairs of learning rates, five metrics
    assert all(r.n_subjects == 6 for r in rows)  # subjects swapped, not images
    assert s.questions.lr_effect.over_folds and set(s.questions.lr_effect.metrics) == FIVE
    # the difference is the mean over folds of each side's fold models
    first = next(r for r in rows if r.metric == "accuracy")
    side = lambda sc: sum(m.metrics.accuracy for m in s.units_of(sc)) / 3  # noqa: E731
    assert first.diff == pytest.approx(side(first.a) - side(first.b))
    # Holm within each metric of this family
    for metric in FIVE:
        ps = sorted((r.p, r.p_holm) for r in rows if r.metric == metric)
        assert all(h >= p for p, h in ps)
    assert "all 3 folds of each scenario" in page and "study-tests" in page


def test_the_study_wens_are_their_own_family_and_baselines_stand_outside(a_run):
    run_dir, page = a_run
    s = load_summary(run_dir)
    study = s.comparisons.best_single_vs_ensembles
    baselines = s.comparisons.baselines_vs_single
    weighting = {e.name: e.weighting for e in s.ensembles}
    assert {weighting[r.a] for r in study} == {"accuracy", "f1", "kappa"}
    assert {weighting[r.a] for r in baselines} == {"uniform", "vote"}
    assert {r.metric for r in study} == FIVE | {"auc"}
    assert s.questions.wen_vs_single.n_baselines == len({r.a for r in baselines})
    assert "outside the study&#39;s family" in page or "outside the study's family" in page


def test_every_models_roc_in_one_chart(a_run):
    run_dir, _ = a_run
    s = load_summary(run_dir)
    svg = (RunFolder(run_dir).report_figures_dir / "roc_all.svg").read_text(encoding="utf-8")
    drawn = [m for m in (*s.single_models, *s.ensembles) if m.roc.fpr]
    assert len(s.single_models) == 9 and svg.count("<polyline") == len(drawn) > 9
    for m in drawn:
        assert m.name in svg


def test_test_selected_intra_weights_are_named_and_flag_test_selection(tmp_path):
    run_dir, page = _run(tmp_path, "a_test", lrs=(1e-3, 1e-4), folds=3,
                         overrides=["evaluation.questions=wen", "ensemble.weights_from=test",
                                    "ensemble.weightings=[accuracy, kappa]"])
    s = load_summary(run_dir)
    intra = [e for e in s.ensembles if e.kind == "intra"]
    assert intra and all("test-selected" in e.note for e in intra)
    assert all("test-selected" not in e.note for e in s.ensembles if e.kind == "inter")
    assert s.selection.test_set_selection


def test_the_best_weighting_follows_the_champion_rule():
    from allwen.evaluation.run import best_study_weighting, weighting_means
    from allwen.evaluation.results import Ensemble

    def ens(name, weighting, acc, kappa):
        metrics = dict(accuracy=acc, balanced_accuracy=acc, precision=acc, recall=acc, specificity=acc, f1=acc,
                       kappa=kappa, auc=acc, f1_macro=acc, f1_weighted=acc)
        return Ensemble(name=name, metrics=metrics, confusion=[[1, 0], [0, 1]], kind="intra", weighting=weighting,
                        members=["a"], weights=[1.0], scores=[1.0],
                        spread=dict(min=1, max=1, max_deviation=0, agreement_with_uniform=1,
                                    indistinguishable_from_uniform=True))

    ensembles = [ens("intra/accuracy", "accuracy", 0.90, 0.50), ens("intra/kappa", "kappa", 0.80, 0.70)]
    assert best_study_weighting(weighting_means(ensembles, "test", "accuracy")) == "accuracy"
    assert best_study_weighting(weighting_means(ensembles, "test", "kappa")) == "kappa"
    # validation: each ensemble's out-of-fold validation score, whatever the test says
    validation = {"intra/accuracy": 0.6, "intra/kappa": 0.9}
    assert best_study_weighting(weighting_means(ensembles, "validation", "accuracy", validation)) == "kappa"


def test_grid_studies_ask_only_the_grid(tmp_path):
    """D's report: lr x epochs and its folds, none of A's ensemble questions."""
    run_dir, page = _run(tmp_path, "d", lrs=(1e-3,), folds=3, overrides=[
        "evaluation.questions=grid", "scenarios={train.lr: [0.001, 0.0001], train.stage2.epochs: [5, 10]}"])
    s = load_summary(run_dir)
    assert s.questions is None and A_QUESTION not in page and "Grid winner" in page
    assert not s.comparisons.lr_folds and "roc-all" not in page


def test_d_sets_its_fold_range_beside_the_papers(tmp_path):
    from allwen.config.schema import PaperConfig
    from allwen.evaluation.paper import paper_facts
    from allwen.pipeline import load_run_config

    run_dir, _ = _run(tmp_path, "d2", lrs=(1e-3,), folds=3, overrides=[
        "scenarios={train.lr: [0.001, 0.0001], train.stage2.epochs: [5, 10]}"])
    s = load_summary(run_dir)
    cfg = load_run_config(run_dir)
    cfg.paper = PaperConfig(
        citation="D", split="official", selected_on="unstated", average="binary", compare_to="fold_range",
        reported="a range over 5 folds", cell={"train.lr": 0.001, "train.stage2.epochs": 10},
        numbers=[{"metric": "accuracy", "value": 0.9712, "fold": "lowest", "where": "lowest fold"},
                 {"metric": "accuracy", "value": 0.9985, "fold": "highest", "where": "highest fold"}])
    rows, protocol = paper_facts(cfg, s)
    cell = next(sc for sc in s.scenarios if sc.settings == {"train.lr": 0.001, "train.stage2.epochs": 10})
    folds = [m.metrics.accuracy for m in s.units_of(cell.name)]
    assert protocol.cell == cell.name and len(folds) == 3
    assert rows[0].run == min(folds) and rows[1].run == max(folds)
    assert (rows[0].low, rows[0].high) == (min(folds), max(folds)) and rows[0].fold_values == folds
    assert rows[0].model in {m.name for m in s.units_of(cell.name)}


def test_c_sets_its_reported_cell_beside_the_papers(tmp_path):
    from allwen.config.schema import PaperConfig
    from allwen.evaluation.paper import paper_facts
    from allwen.pipeline import load_run_config

    run_dir, _ = _run(tmp_path, "c", lrs=(1e-3,), folds=1, overrides=[
        "scenarios={train.batch_size: [16, 32], train.stage2.epochs: [1, 2]}"])
    s = load_summary(run_dir)
    cfg = load_run_config(run_dir)
    cfg.paper = PaperConfig(citation="C", split="image", selected_on="test", average="macro", compare_to="cell",
                            cell={"train.batch_size": 16, "train.stage2.epochs": 2}, reported="one grid cell",
                            numbers=[{"metric": "accuracy", "value": 0.96, "where": "Table 3"}])
    rows, protocol = paper_facts(cfg, s)
    unit = s.units_of(protocol.cell)[0]
    assert protocol.cell == "batch_size=16_epochs=2" and rows[0].model == unit.name
    assert rows[0].run == unit.metrics.accuracy


def test_paper_block_says_what_was_reported_its_contradictions_and_other_methods(tmp_path):
    from allwen.config.schema import PaperConfig
    from allwen.evaluation.paper import paper_facts
    from allwen.pipeline import load_run_config
    from allwen.report.paper import paper_blocks
    from allwen.report.view import Table, Text

    run_dir, _ = _run(tmp_path, "e", lrs=(1e-3,), folds=1)
    s = load_summary(run_dir)
    cfg = load_run_config(run_dir)
    cfg.paper = PaperConfig(
        citation="E", split="image", selected_on="unstated", average="unstated", reported="one model's test results",
        contradictions=['its text twice claims "akurasi 100%" beside the abstract\'s 95.6%'],
        other_methods=[{"method": "VGG16", "metric": "accuracy", "value": 0.9, "where": "Table 5"}],
        numbers=[{"metric": "accuracy", "value": 0.956, "where": "abstract"}])
    s.paper_comparison, s.paper_protocol = paper_facts(cfg, s)
    blocks = paper_blocks(s)
    texts = [b.text for b in blocks if isinstance(b, Text)]
    assert any("The paper reported one model's test results" in t for t in texts)
    assert any("contradicts itself" in t and "akurasi 100%" in t for t in texts)
    table = next(b for b in blocks if isinstance(b, Table) and b.headers[0] == "Method")
    assert [r.cells[0].text for r in table.rows] == ["VGG16", f"this run ({s.best_single})"]
    assert table.rows[1].cells[2].text == f"{s.model(s.best_single).metrics.accuracy:.3f}"
