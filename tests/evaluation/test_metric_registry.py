"""A metric is added in one place, the registry, and reaches the results model, the grid, the
selectable choices and the rendered report; the registry itself stays light (numpy only)."""

from __future__ import annotations

import ast
import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from allwen.config import ConfigError, load_config
from allwen.evaluation import metric_registry
from allwen.evaluation.metrics import compute_metrics
from allwen.runfolder import RunFolder

SRC = Path(__file__).resolve().parents[2] / "src"

# Registers Youden's J (sensitivity + specificity - 1) before anything else reads the registry, as a
# plugin or a new line in metric_registry.py would, then makes a synthetic run choose by it and report it.
ADD_ONE_METRIC = """
import json, sys
from pathlib import Path

from allwen.evaluation.metric_registry import Metric, register

register(Metric("youden", "Youden's J", lambda c: c.headline("recall") + c.headline("specificity") - 1.0,
                headline=True, selectable=True, summary_rank=7))

from allwen.config import load_config
from allwen.config.choices import SELECTION_METRICS
from allwen.evaluation.results import load_summary
from allwen.evaluation.synthetic import write_synthetic_run
from allwen.pipeline import rebuild_report

run = Path(sys.argv[1])
write_synthetic_run(run, n_test=60, n_test_subjects=6, n_pool=120, n_pool_subjects=8, lrs=(1e-3, 1e-4), folds=2,
                    bootstrap=20, overrides=["ensemble.champion_metric=youden", "ensemble.weightings=[accuracy]"])
rebuild_report(run)
s = load_summary(run)
best = s.model(s.best_single)
print(json.dumps({
    "choices": list(SELECTION_METRICS),
    "monitor": load_config("demo", ["train.monitor=youden"]).train.monitor,
    "champion_metric": s.selection.champion_metric,
    "best": best.metrics.model_dump(),
    "grid": [sorted(r.test) for r in s.scenarios] + [sorted(r.val) for r in s.scenarios],
}))
"""


def test_a_metric_registered_in_one_place_reaches_results_grid_choices_and_report(tmp_path):
    run = tmp_path / "run"
    done = subprocess.run([sys.executable, "-c", ADD_ONE_METRIC, str(run)], capture_output=True, text=True,
                          timeout=600, env={"PYTHONPATH": str(SRC), "PATH": "/usr/bin:/bin", "ALLWEN_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-3000:]
    got = json.loads(done.stdout.strip().splitlines()[-1])
    assert got["choices"] == ["accuracy", "f1", "kappa", "auc", "youden"]  # the config's choice
    assert got["champion_metric"] == "youden"  # and the run was chosen by it
    assert got["monitor"] == "youden"  # training may keep its best epoch by it too
    best = got["best"]  # the results model has the field, computed by the registered function
    assert best["youden"] == pytest.approx(best["recall"] + best["specificity"] - 1.0)
    assert best["ci"]["youden"][0] <= best["youden"] <= best["ci"]["youden"][1]  # bootstrapped like the others
    assert all("youden" in names for names in got["grid"])  # each grid cell's test and validation mean
    page = RunFolder(run).report_html.read_text(encoding="utf-8")
    assert page.count("Youden&#39;s J") + page.count("Youden's J") >= 3  # summary, single-model and ensemble tables
    assert f"{best['youden']:.3f}" in page
    with open(RunFolder(run).metrics_csv, newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert {"youden", "youden_lo", "youden_hi"} <= set(rows[0])


def test_without_the_registration_the_metric_is_nowhere():
    """The control: in this process the metric was never registered, so nothing knows it."""
    assert "youden" not in metric_registry.metric_names()
    with pytest.raises(ConfigError, match="champion_metric"):
        load_config("demo", ["ensemble.champion_metric=youden"])
    with pytest.raises(ConfigError, match="monitor"):
        load_config("demo", ["train.monitor=youden"])
    assert "youden" not in compute_metrics([0, 1], np.array([[0.8, 0.2], [0.3, 0.7]]))


def test_built_in_metrics_keep_their_names_and_choices():
    """summary.json fields and config values are contracts."""
    assert metric_registry.metric_names() == (
        "accuracy", "balanced_accuracy", "precision", "recall", "specificity", "f1", "kappa", "auc",
        "f1_macro", "f1_weighted", "precision_macro", "precision_weighted", "recall_macro", "recall_weighted")
    assert metric_registry.selectable_names() == ("accuracy", "f1", "kappa", "auc")
    assert metric_registry.summary_names() == ("accuracy", "kappa", "auc", "balanced_accuracy", "precision",
                                               "recall", "f1")
    assert "specificity" not in metric_registry.grid_names()


def test_registration_refuses_what_a_choice_or_a_record_could_not_use():
    bad = [metric_registry.Metric("accuracy", "Again", lambda c: c.observed),
           metric_registry.Metric("ci", "Clash", lambda c: c.observed),
           metric_registry.Metric("loss_like", "Lower", lambda c: 1 - c.observed, higher_is_better=False, selectable=True),
           metric_registry.Metric("ranked", "No function", None)]
    for metric in bad:
        with pytest.raises(ValueError, match=metric.name):
            metric_registry.register(metric)
    assert "loss_like" not in metric_registry.metric_names()


def test_the_registry_imports_numpy_and_the_standard_library_only():
    """The config reads its choices from the registry, so the registry may import nothing of allwen
    (``.importlinter`` lets ``allwen.config.choices`` import it for that reason)."""
    tree = ast.parse(Path(metric_registry.__file__).read_text())
    imported = {(n.module if isinstance(n, ast.ImportFrom) else a.name).split(".")[0]
                for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom)) for a in n.names}
    assert imported <= {"__future__", "collections", "dataclasses", "functools", "numpy"}


def test_training_records_and_monitors_what_the_registry_says(monkeypatch):
    """An epoch's history records every selectable metric, and early stopping runs the way the metric improves."""
    from allwen.training.callbacks import monitor_mode
    from allwen.training.task import history_metrics

    assert history_metrics() == ("accuracy", "balanced_accuracy", "f1", "kappa", "auc")
    assert (monitor_mode("loss"), monitor_mode("kappa")) == ("min", "max")
    youden = metric_registry.Metric("youden", "Youden's J", lambda c: c.headline("recall") + c.headline("specificity") - 1,
                                    selectable=True)
    monkeypatch.setitem(metric_registry._REGISTRY, "youden", youden)
    assert history_metrics()[-1] == "youden"
    monkeypatch.setitem(metric_registry._REGISTRY, "error", metric_registry.Metric("error", "Error", lambda c: 1 - c.observed,
                                                                                   higher_is_better=False))
    assert monitor_mode("error") == "min"
