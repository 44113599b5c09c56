"""``allwen export RUN --out B`` without ``--model`` on every run shape: it exports ``summary.json``'s
``default_export``, and the model card's metrics and intervals are the report's."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import numpy as np
import pytest

from allwen.runfolder import RunFolder
from allwen.bundle import BundleFolder

FAST = ["data.image_size=32", "data.augment=none", "train.stage1.epochs=1", "train.stage2=null",
        "train.batch_size=16", "evaluation.bootstrap=20", "split.test=0.3", "ensemble.weightings=[accuracy, vote, greedy]"]
SHAPES = {
    "lr_grid": ["split.folds=2", "scenarios={train.lr: [0.01, 0.001]}"],
    "backbones": ["split.folds=2", "scenarios={model: [{backbone: test_efficientnet}, {backbone: test_efficientnet_gn}]}"],
    "sweep": ["split.folds=2", "scenarios={}", "sweep=[{train.lr: [0.01, 0.001]}, {train.batch_size: [8, 16]}]"],
    "epoch_grid": ["split.folds=2", "train.keep=last", "train.stage1.patience=null",
                   "scenarios={train.stage1.epochs: [1, 2]}"],
    "one_fold": ["split.folds=1", "split.val_fraction=0.3", "split.group_by=image", "scenarios={train.lr: [0.01, 0.001]}"],
}


@pytest.fixture(scope="module")
def cnmc(tmp_path_factory) -> Path:
    from allwen.data.synth import generate_cnmc

    root = tmp_path_factory.mktemp("shapes")
    generate_cnmc(root / "data", n_all_subjects=4, n_hem_subjects=4, cells_per_subject=5, image_size=32,
                  prelim_subjects=(1, 1), seed=3)
    return root / "data" / "C-NMC_Leukemia" / "training_data"


@pytest.fixture(scope="module")
def four_classes(tmp_path_factory) -> Path:
    """Taleqani-like class folders (Benign, Early, Pre, Pro), a colour per class plus noise."""
    from PIL import Image

    root = tmp_path_factory.mktemp("four") / "cells"
    rng = np.random.default_rng(0)
    for k, cls in enumerate(("Benign", "Early", "Pre", "Pro")):
        (root / cls).mkdir(parents=True)
        for i in range(12):
            pixels = np.clip(rng.normal(60 * k + 40, 30, (32, 32, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(root / cls / f"{cls}_{i:02d}.png")
    return root


def _run(tmp_path: Path, data: Path, extra: list[str]) -> Path:
    from allwen.config import load_config
    from allwen.pipeline import run_pipeline

    cfg = load_config("demo", [f"data.path={data}", *FAST, *extra])
    run_pipeline(cfg, tmp_path / "run", quiet=True)
    return tmp_path / "run"


@pytest.fixture(scope="module")
def lr_grid(cnmc, tmp_path_factory) -> Path:
    return _run(tmp_path_factory.mktemp("lr_grid"), cnmc, SHAPES["lr_grid"])


def _export_default(run: Path, out: Path) -> dict:
    from typer.testing import CliRunner

    from allwen.cli import app

    result = CliRunner().invoke(app, ["export", str(run), "--out", str(out)])
    assert result.exit_code == 0, result.output
    manifest = json.loads(BundleFolder(out).manifest_path.read_text())
    summary = json.loads(RunFolder(run).summary_path.read_text())
    assert manifest["name"] == summary["default_export"]
    assert manifest["chosen_as"] == "default_export"
    return manifest


def _card_rows(card: str) -> dict[str, tuple[str, str, str]]:
    section = card.split("## Test metrics", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\| (\w+) \| ([^|]+) \| ([^|]+) - ([^|]+) \|$", section, re.M)
    return {name: (value.strip(), lo.strip(), hi.strip()) for name, value, lo, hi in rows}


def _report_row(run: Path, name: str) -> dict[str, str]:
    with open(RunFolder(run).metrics_csv, newline="") as handle:
        return next(r for r in csv.DictReader(handle) if r["name"] == name)


def _fmt(text: str) -> str:
    return "n/a" if text == "" else f"{float(text):.3f}"


@pytest.mark.parametrize("shape", sorted(SHAPES))
def test_export_without_model_writes_the_default_export(shape, cnmc, lr_grid, tmp_path):
    run = lr_grid if shape == "lr_grid" else _run(tmp_path, cnmc, SHAPES[shape])
    summary = json.loads(RunFolder(run).summary_path.read_text())
    manifest = _export_default(run, tmp_path / "bundle")
    if shape == "one_fold":  # no ensembles: the best single model by validation
        assert summary["ensembles"] == [] and manifest["kind"] == "unit"
    else:
        assert manifest["kind"] == "ensemble"
    assert manifest["name"] == summary["default_export"]
    assert BundleFolder(tmp_path / "bundle").model_card.read_text().startswith(f"# Model card: {summary['default_export']}")


def test_export_without_model_on_a_four_class_run(four_classes, tmp_path):
    run = _run(tmp_path, four_classes, ["data.source=folder", "split.group_by=image", "split.folds=2",
                                        "scenarios={train.lr: [0.01]}", "model.head=softmax"])
    manifest = _export_default(run, tmp_path / "bundle")
    assert manifest["classes"] == ["Benign", "Early", "Pre", "Pro"]


def test_model_card_metrics_and_intervals_equal_the_reports(lr_grid, tmp_path):
    run = lr_grid
    manifest = _export_default(run, tmp_path / "bundle")
    card = _card_rows(BundleFolder(tmp_path / "bundle").model_card.read_text())
    report = _report_row(run, manifest["name"])
    assert set(card) >= {"accuracy", "kappa", "auc", "f1", "precision", "recall"}
    for metric, (value, lo, hi) in card.items():
        if metric not in report:
            continue
        assert (value, lo, hi) == (_fmt(report[metric]), _fmt(report[f"{metric}_lo"]), _fmt(report[f"{metric}_hi"])), metric
