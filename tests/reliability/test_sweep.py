"""A stepwise sweep in one command: each step's winner in sweep.json, resumable per step."""

from __future__ import annotations

import json
import signal

import pytest

from allwen.config import ConfigError, load_config
from allwen.config.sweep import step_config

from .conftest import allwen
from allwen.runfolder import RunFolder

SWEEP = "sweep=[{train.lr: [0.01, 0.001]}, {train.batch_size: [8, 16]}, {train.stage1.epochs: [1, 2]}]"


def sweep_args(data_path, out):
    args = ["run", "demo", "--out", str(out), "--quiet", "--set", f"data.path={data_path}"]
    for item in ("data.image_size=32", "data.augment=none", "split.folds=1", "split.val_fraction=0.3",
                 "split.test=0.3", "train.stage1.epochs=1", "train.stage2=null", "train.keep=last",
                 "train.stage1.patience=null", "evaluation.bootstrap=20",
                 "scenarios={}", SWEEP):
        args += ["--set", item]
    return args


def test_step_config_fixes_earlier_winners_and_checks_keys():
    cfg = load_config("experiment_b")
    step = step_config(cfg, 3, [{"train.optimizer": "rmsprop"}, {"train.lr": 0.001}])
    assert step.train.optimizer == "rmsprop" and step.train.lr == 0.001 and step.sweep == []
    assert step.scenarios == {"train.stage2.epochs": [20, 30, 50]}
    with pytest.raises(ConfigError, match="sweep.train.nope"):
        load_config("experiment_b", ["sweep=[{train.nope: [1]}]"])
    with pytest.raises(ConfigError, match="sweep and scenarios"):
        load_config("experiment_b", ["scenarios={train.lr: [0.1]}"])


def test_three_step_sweep_resumes_after_kill_between_steps(synth_root, tmp_path):
    data = synth_root / "training_data"
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    done = allwen(*sweep_args(data, straight), timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    sweep = json.loads(RunFolder(straight).sweep_json.read_text())
    assert [s["step"] for s in sweep["steps"]] == [1, 2, 3]
    for step in sweep["steps"]:
        means = [v["mean"] for v in step["values"]]
        first_best = means.index(max(means))  # ties go to the earlier value
        assert step["winner"] == step["values"][first_best]["settings"]
        assert all(len(v["units"]) == 1 for v in step["values"])
        assert all(0.0 <= v["train_accuracy"] <= 1.0 for v in step["values"])  # B's train/validation bars
    assert len(list(straight.glob("sweep/step_1/units/*/fold_0/unit.json"))) == 2
    assert len(list(straight.glob("sweep/step_2/units/*/fold_0/unit.json"))) == 2
    assert len(list(straight.glob("units/*/fold_0/unit.json"))) == 2  # the last step is the run's grid
    page = RunFolder(straight).report_html.read_text(encoding="utf-8")
    assert 'id="sweep"' in page and "Sweep step 3" in page and "Does any WEN beat" not in page
    for step in sweep["steps"]:  # each step's chart: a bar per value, train and validation
        chart = (RunFolder(straight).report_figures_dir / f"sweep_step_{step['step']}.svg").read_text(encoding="utf-8")
        assert chart.count("<rect") >= 2 * len(step["values"]) and "validation accuracy" in chart
    bars = (RunFolder(straight).report_figures_dir / "sweep_step_1.svg").read_text(encoding="utf-8")
    assert bars.count("<rect") >= 2 + 4 and "train accuracy" in bars and "validation accuracy" in bars

    first = allwen(*sweep_args(data, killed), env={"ALLWEN_KILL_AT": "sweep_step_written"}, timeout=600)
    assert first.returncode == -signal.SIGKILL, first.stderr[-2000:]
    assert len(json.loads(RunFolder(killed).sweep_json.read_text())["steps"]) == 1
    assert not (killed / "sweep" / "step_2").exists()
    resumed = allwen(*sweep_args(data, killed), timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert json.loads(RunFolder(killed).sweep_json.read_text()) == sweep
