"""The report renders a realistic summary.json into self-contained HTML, Markdown and CSV."""

from __future__ import annotations

import copy
import csv
import html
import json
import math
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from allwen.report import build_report

SECTIONS = ["data", "split", "single-models", "champions", "ensembles", "roc", "confusion", "curves", "questions"]
METRICS = ["accuracy", "balanced_accuracy", "precision", "recall", "specificity", "f1", "kappa", "auc"]


def _tiny_png(path: Path, seed: int) -> None:
    """A real (small) curves.png, as a training unit would leave behind."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(2, 1.5))
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    ax.plot(np.cumsum(np.random.default_rng(seed).random(10)))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png", dpi=40)


def _roc(rng: np.random.Generator, auc: float) -> dict[str, Any]:
    fpr = np.linspace(0, 1, 12)
    tpr = np.clip(fpr ** (1 / (1 + 4 * auc)) + rng.normal(0, 0.01, 12), 0, 1)
    tpr[0], tpr[-1] = 0.0, 1.0
    return {"fpr": fpr.tolist(), "tpr": np.maximum.accumulate(tpr).tolist(), "auc": auc}


def _metrics(rng: np.random.Generator, classes: list[str]) -> dict[str, Any]:
    values = {k: float(rng.uniform(0.70, 0.97)) for k in METRICS}
    ci = {k: [v - float(rng.uniform(0.02, 0.05)), min(1.0, v + float(rng.uniform(0.02, 0.05)))]
          for k, v in values.items()}
    n = len(classes)
    confusion = rng.integers(1, 10, size=(n, n)) + np.diag(rng.integers(20, 60, size=n))
    return {"metrics": {**values, "ci": ci}, "confusion": confusion.tolist()}


def _model_roc(rng: np.random.Generator, classes: list[str], auc: float) -> dict[str, Any]:
    if len(classes) == 2:
        return _roc(rng, auc)
    return {"per_class": {c: _roc(rng, auc) for c in classes}, "auc": auc}


def make_summary(run_dir: Path, classes: list[str] | None = None, seed: int = 0) -> dict[str, Any]:
    """2 scenarios x 2 folds, champions, 2 inter + 1 intra ensembles x 2 weightings."""
    classes = classes or ["hem", "all"]
    rng = np.random.default_rng(seed)
    scenarios = ["lr=0.001", "lr=0.0001"]
    singles = []
    for scenario in scenarios:
        for fold in range(2):
            name = f"{scenario}/fold_{fold}"
            curves = f"units/{scenario}/fold_{fold}/curves.png"
            _tiny_png(run_dir / curves, fold)
            entry = {"name": name, "scenario": scenario, "fold": fold,
                     "val_metrics": {"accuracy": float(rng.uniform(0.8, 0.95))}, "best_stage": "stage2",
                     "curves": curves, **_metrics(rng, classes)}
            entry["roc"] = _model_roc(rng, classes, entry["metrics"]["auc"])
            singles.append(entry)
    champions = [dict(copy.deepcopy(singles[0]), selected_by="validation"),
                 dict(copy.deepcopy(singles[3]), selected_by="validation")]
    ensembles = []
    for weighting in ["kappa", "uniform"]:
        groups = [("inter", s, [m["name"] for m in singles if m["scenario"] == s]) for s in scenarios]
        groups.append(("intra", "all", [c["name"] for c in champions]))
        for kind, scenario, members in groups:
            weights = rng.dirichlet(np.ones(len(members))).tolist()
            entry = {"name": f"{kind}[{scenario}]/{weighting}", "kind": kind, "scenario": scenario,
                     "weighting": weighting, "members": members, "weights": weights,
                     "scores": rng.uniform(0.7, 0.9, len(members)).tolist(), "note": "", **_metrics(rng, classes)}
            entry["roc"] = _model_roc(rng, classes, entry["metrics"]["auc"])
            ensembles.append(entry)
    comparison = {"a": "lr=0.001", "b": "lr=0.0001", "test": "mcnemar", "statistic": 3, "p": 0.0412,
                  "p_holm": 0.1236, "diff_accuracy": 0.03, "diff_ci": [0.0, 0.06]}
    delong = {"a": "lr=0.001", "b": "lr=0.0001", "test": "delong", "statistic": 1.7, "p": 0.089,
              "p_holm": 0.178, "diff_auc": 0.021, "diff_ci": [-0.01, 0.05]}
    vs = [{"a": singles[0]["name"], "b": e["name"], "test": "mcnemar", "statistic": 2, "p": 0.00021,
           "p_holm": 0.0013, "diff_accuracy": -0.04, "diff_ci": [-0.07, -0.01]} for e in ensembles]
    n_class = {c: 100 * (i + 1) for i, c in enumerate(classes)}
    return {
        "name": "unit-test experiment", "created": "2024-05-01T12:00:00+00:00", "allwen_version": "0.1.0",
        "classes": classes, "positive_class": classes[-1] if len(classes) == 2 else None,
        "data": {"source": "cnmc", "root": "/data/cnmc", "n_images": sum(n_class.values()), "classes": n_class,
                 "n_subjects": {c: 4 + i for i, c in enumerate(classes)}, "n_duplicate_groups": 3, "imbalance": 2.0},
        "split": {"method": "holdout+2fold/subject/dedup", "n_test": 120,
                  "folds": [{"train": 384, "val": 96}, {"train": 384, "val": 96}],
                  "leakage": [{"fold": 0, "a": "train", "b": "val", "n_a": 384, "n_b": 96, "shared_subjects": 0,
                               "shared_duplicate_groups": 0, "examples": []},
                              {"fold": 1, "a": "train", "b": "test", "n_a": 384, "n_b": 120, "shared_subjects": 2,
                               "shared_duplicate_groups": 1, "examples": ["subject_7"]}],
                  "leakage_summary": "train vs val: 0 shared subjects - no leakage\ntrain vs test: 2 shared - LEAKS"},
        "config": {"model": {"backbone": "tf_efficientnetv2_m"}, "data": {"image_size": 224},
                   "split": {"folds": 2}, "train": {"lr": 0.001},
                   "scenarios": {"train.lr": [0.001, 0.0001]},
                   "ensemble": {"weightings": ["kappa", "uniform"]}},
        "selection": {"champion_by": "validation", "champion_metric": "accuracy", "test_set_selection": False},
        "evaluation": {"bootstrap": 1000, "confidence": 0.95, "n_test": 120},
        "single_models": singles, "champions": champions, "ensembles": ensembles,
        "comparisons": {"scenarios": [comparison, delong], "best_single_vs_ensembles": vs},
        "questions": [
            {"id": "lr_effect", "question": "Does the learning rate change single-model performance significantly?",
             "answer": "No: accuracy differs by 0.030 (McNemar p=0.041, Holm p=0.124).",
             "evidence": ["McNemar lr=0.001 vs lr=0.0001: p_holm=0.124"]},
            {"id": "wen_gain", "question": "Do ensembles beat the best single model?",
             "answer": "Yes, every ensemble is significantly better.", "evidence": ["Holm p=0.0013"]},
        ],
    }


def write_summary(run_dir: Path, summary: dict[str, Any]) -> None:
    (run_dir / "report").mkdir(parents=True, exist_ok=True)
    (run_dir / "report" / "summary.json").write_text(json.dumps(summary))


def visible_text(page: str) -> str:
    page = re.sub(r"<style>.*?</style>", "", page, flags=re.S)
    return html.unescape(re.sub(r"\s+", " ", re.sub(r"<[^>]+>", "", page)))


@pytest.fixture(scope="module")
def binary_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    """One built binary report shared by the read-only checks (figures take a second)."""
    run_dir = tmp_path_factory.mktemp("run")
    summary = make_summary(run_dir)
    write_summary(run_dir, summary)
    build_report(run_dir)
    return run_dir, summary


def test_full_report_is_self_contained_and_complete(binary_run: tuple[Path, dict[str, Any]]) -> None:
    run_dir, summary = binary_run
    index = build_report(run_dir)  # rebuilding over an existing report is fine
    assert index == run_dir / "report" / "index.html"
    page = index.read_text(encoding="utf-8")
    text = visible_text(page)

    for section in SECTIONS:
        assert f'id="{section}"' in page
    for group in ("single_models", "champions", "ensembles"):
        for model in summary[group]:
            assert model["name"] in text
    single = summary["single_models"][1]["metrics"]
    assert f"{single['accuracy']:.3f} [{single['ci']['accuracy'][0]:.3f}, {single['ci']['accuracy'][1]:.3f}]" in text
    ensemble = summary["ensembles"][2]
    assert f"{ensemble['metrics']['kappa']:.3f}" in text
    assert f"{ensemble['weights'][0]:.3f}" in text
    assert "tf_efficientnetv2_m" in text and "224 x 224" in text and "holdout+2fold/subject/dedup" in text

    # self-contained: no remote or linked assets, every image inline
    assert 'src="http' not in page and "<link" not in page and "<script src" not in page
    images = re.findall(r'<img src="([^"]+)"', page)
    assert len(images) >= 4 + 3  # 4 unit curves + ROC + 2 confusion grids
    assert all(src.startswith("data:image/png;base64,") for src in images)
    assert 'class="best"' in page  # best ensemble row marked
    assert 'class="leak"' in page and "LEAKS" in text
    assert "0.041" in text and "0.124" in text and "2.1e-04" in text  # p and Holm p
    assert "percentile bootstrap" in text and "Holm" in text
    assert "TEST set" not in text
    for name in ("roc_overlay.png", "roc_ensembles_by_weighting.png", "confusion_champions.png",
                 "confusion_ensembles.png"):
        assert (run_dir / "report" / "figures" / name).stat().st_size > 1000


def test_metrics_csv_matches_summary(binary_run: tuple[Path, dict[str, Any]]) -> None:
    run_dir, summary = binary_run
    with open(run_dir / "report" / "metrics.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    models = summary["single_models"] + summary["champions"] + summary["ensembles"]
    assert len(rows) == len(models) == 4 + 2 + 6
    assert list(rows[0])[:6] == ["group", "name", "kind", "scenario", "fold", "weighting"]
    assert [r["group"] for r in rows].count("champion") == 2
    for row, model in zip(rows, models):
        assert row["name"] == model["name"]
        for key in METRICS:
            assert float(row[key]) == model["metrics"][key]
            lo, hi = model["metrics"]["ci"][key]
            assert float(row[f"{key}_lo"]) == lo and float(row[f"{key}_hi"]) == hi
    assert rows[-1]["kind"] == "intra" and rows[-1]["weighting"] == "uniform"


def test_markdown_has_questions_and_relative_figures(binary_run: tuple[Path, dict[str, Any]]) -> None:
    run_dir, summary = binary_run
    md = (run_dir / "report" / "report.md").read_text(encoding="utf-8")
    for question in summary["questions"]:
        assert f"**{question['question']}**" in md
        assert question["answer"] in md
    assert "](figures/roc_overlay.png)" in md
    assert "](../units/lr=0.001/fold_0/curves.png)" in md
    assert "base64" not in md


def test_missing_summary_names_the_file(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=re.escape(str(tmp_path / "report" / "summary.json"))) as err:
        build_report(tmp_path)
    assert "allwen run" in str(err.value) and "allwen report" in str(err.value)


def test_sparse_summary_still_renders(tmp_path: Path) -> None:
    summary = make_summary(tmp_path)
    summary["ensembles"] = []
    for key in ("questions", "comparisons", "evaluation", "data"):
        del summary[key]
    (tmp_path / summary["single_models"][0]["curves"]).unlink()
    del summary["single_models"][1]["roc"]
    summary["single_models"][2]["metrics"]["ci"].pop("auc")
    summary["selection"]["test_set_selection"] = True
    write_summary(tmp_path, summary)

    stale = tmp_path / "report" / "figures" / "confusion_ensembles.png"
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"old")
    text = visible_text(build_report(tmp_path).read_text(encoding="utf-8"))
    assert not stale.exists()  # no figure left over from an earlier build
    assert "n/a" in text
    assert "No ensembles in this run" in text
    assert "champions were selected on the TEST set, as in the original study" in text
    with open(tmp_path / "report" / "metrics.csv", newline="") as handle:
        assert len(list(csv.DictReader(handle))) == 6


def test_multiclass_summary_renders(tmp_path: Path) -> None:
    classes = ["Benign", "Early", "Pre", "Pro"]
    summary = make_summary(tmp_path, classes=classes, seed=3)
    write_summary(tmp_path, summary)
    page = build_report(tmp_path).read_text(encoding="utf-8")
    text = visible_text(page)
    assert "multi-class" in text
    for name in classes:
        assert name in text
    assert (tmp_path / "report" / "figures" / "roc_overlay.png").is_file()
    assert (tmp_path / "report" / "figures" / "confusion_ensembles.png").is_file()
    auc = summary["ensembles"][0]["metrics"]["auc"]
    assert math.isfinite(auc) and f"{auc:.3f}" in text
