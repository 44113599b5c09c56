"""``allwen run CONFIG --dry-run --estimate`` on a tiny model: every field, sane numbers."""

import json

from typer.testing import CliRunner

from allwen.config import load_config
from allwen.training.estimate import estimate, format_estimate


def test_the_estimate_times_each_stage_and_projects_the_run():
    cfg = load_config("demo", ["data.image_size=32", "train.batch_size=8", "split.folds=2",
                               "train.stage1.epochs=3", "train.stage2.epochs=5", "train.stage1.augment=true"])
    found = estimate(cfg, n_images=100, batches=1)
    assert found["units"] == 3 * 2 and found["images"] == 100 and found["batch_size"] == 8
    assert [s["stage"] for s in found["stages"]] == ["stage1", "stage2"]
    s1, s2 = found["stages"]
    assert s1["epochs"] == 3 and s2["epochs"] == 5 and s1["augmented"] and not s1["feature_cache"]
    assert s1["seconds_per_epoch"] > 0 and s2["seconds_per_epoch"] > 0
    per_unit = 3 * s1["seconds_per_epoch"] + 5 * s2["seconds_per_epoch"]
    assert abs(found["hours_total_upper_bound"] - 6 * per_unit / 3600) < 0.01
    assert found["peak_memory_mb"] > 0 and found["memory_kind"] == "resident set size"
    assert found["batch_fits"] is True and found["device"] == "cpu"
    text = format_estimate(found)
    assert "s per epoch x 3 epochs" in text and "6 units: at most" in text and "the batch fits" in text


def test_a_cached_stage1_is_one_frozen_pass_and_the_cli_prints_json():
    from allwen.cli import app

    done = CliRunner().invoke(app, ["run", "demo", "--dry-run", "--estimate", "--json", "--set", "data.image_size=32",
                                    "--set", "train.batch_size=8", "--set", "scenarios={}", "--set", "split.folds=2"])
    assert done.exit_code == 0, done.output
    found = json.loads(done.output.strip().splitlines()[-1])
    assert len(found["units"]) == 2 and found["estimate"]["units"] == 2
    stage1 = found["estimate"]["stages"][0]
    assert stage1["feature_cache"] and stage1["seconds_per_epoch"] == 0 and stage1["seconds_once"] > 0
    bad = CliRunner().invoke(app, ["run", "demo", "--estimate", "--out", "x"])
    assert bad.exit_code == 2 and "--estimate goes with --dry-run" in bad.output
