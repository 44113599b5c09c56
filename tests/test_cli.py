"""The thin command line: each command calls the library and reports clearly."""

import logging

import pandas as pd
import yaml
from typer.testing import CliRunner

from allwen.cli import app
from allwen.runfolder import RunFolder
from allwen.training.progress import GridProgress

runner = CliRunner()


def test_synth_then_split_prints_the_leakage_check(tmp_path):
    result = runner.invoke(app, ["synth", str(tmp_path / "d"), "--all-subjects", "7", "--hem-subjects", "6",
                                 "--cells", "6", "--size", "24", "--duplicates", "2"])
    assert result.exit_code == 0, result.output
    assert "wrote" in result.output
    again = runner.invoke(app, ["synth", str(tmp_path / "d")])
    assert again.exit_code == 2 and "refus" in again.output.lower()

    data = tmp_path / "d" / "C-NMC_Leukemia" / "training_data"
    result = runner.invoke(app, ["split", "demo", "--out", str(tmp_path / "run"), "--set", f"data.path={data}",
                                 "--set", "split.folds=3"])
    assert result.exit_code == 0, result.output
    assert "train vs val: 0 shared subjects, 0 shared duplicate groups, 0 shared near-duplicate groups (worst fold) - no leakage" in result.output
    split = pd.read_csv(RunFolder(tmp_path / "run").split_csv, keep_default_na=False)
    assert sorted(split["path"]) == sorted(str(p) for p in data.rglob("*.bmp"))  # every image, once
    assert [c for c in split.columns if c.startswith("fold_")] == ["fold_0", "fold_1", "fold_2"]
    for k in range(3):  # each image: the test side in every fold, or validation in exactly one fold
        assert set(split[f"fold_{k}"]) == {"train", "val", "test"}
    pool = split[split["fold_0"] != "test"]
    assert ((pool[["fold_0", "fold_1", "fold_2"]] == "val").sum(axis=1) == 1).all()
    saved = yaml.safe_load(RunFolder(tmp_path / "run").config_path.read_text())
    assert saved["split"]["folds"] == 3 and saved["data"]["path"] == str(data)

    leaky = runner.invoke(app, ["split", "demo", "--out", str(tmp_path / "run2"), "--set", f"data.path={data}",
                                "--set", "split.group_by=image", "--set", "split.duplicate_aware=false"])
    assert leaky.exit_code == 0 and "LEAKS" in leaky.output


def test_config_shows_the_resolved_values():
    result = runner.invoke(app, ["config", "experiment_a", "--set", "train.lr=0.5"])
    assert result.exit_code == 0, result.output
    cfg = yaml.safe_load(result.stdout)
    assert cfg["train"]["lr"] == 0.5 and cfg["model"]["backbone"] == "tf_efficientnetv2_m"
    assert cfg["scenarios"] == {"train.lr": [0.001, 0.0001, 0.00001]}


def test_progress_off_a_terminal_logs_one_line_per_epoch(caplog):
    caplog.set_level(logging.INFO, logger="allwen.progress")
    with GridProgress(n_units=2, total_epochs=6, every=60) as progress:  # pytest's output is no terminal
        progress.start_unit(0, "lr=0.1", 0)
        progress.epoch("stage1", 0, 2, {"val_accuracy": 0.75, "val_loss": 0.5})
        progress.end_unit(3, 1)
        progress.skip_unit(3)
    assert "unit 1/2 lr=0.1 fold 0 stage1 epoch 1/2 accuracy 0.750" in caplog.text
    assert progress._done_epochs == 6


def test_help_version_and_presets_speak_to_users():
    from allwen import __version__
    from allwen.config import list_presets

    help_text = runner.invoke(app, ["--help"]).output
    assert "allwen classifies Acute Lymphoblastic Leukemia" in " ".join(help_text.split())
    for command in ("export", "predict", "serve", "presets"):
        assert command in help_text
    version = runner.invoke(app, ["--version"])
    assert version.exit_code == 0 and version.output.strip() == f"allwen {__version__}"
    lines = runner.invoke(app, ["presets"]).output.strip().splitlines()
    assert [line.split()[0] for line in lines] == list_presets()
    assert any("Experiment A: EfficientNetV2-M" in line for line in lines)


def test_dry_run_json_counts_units_trainings_and_steps():
    import json

    expected = {"experiment_c": (12, 2, 1), "experiment_d": (45, 15, 1), "experiment_b": (9, 7, 3),
                "experiment_e": (1, 1, 1)}
    for preset, (units, trainings, steps) in expected.items():
        result = runner.invoke(app, ["run", preset, "--dry-run", "--json"])
        assert result.exit_code == 0, result.output
        found = json.loads(result.stdout)
        assert set(found) == {"units", "trainings", "steps"}
        assert (len(found["units"]), found["trainings"], found["steps"]) == (units, trainings, steps), preset
    # cosine depends on the total epoch count: each cell trains alone
    result = runner.invoke(app, ["run", "experiment_c", "--dry-run", "--json", "--set", "train.schedule=cosine"])
    assert json.loads(result.stdout)["trainings"] == 12
    result = runner.invoke(app, ["run", "experiment_c"])
    assert result.exit_code == 2 and "--out" in result.output
