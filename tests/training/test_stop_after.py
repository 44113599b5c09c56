"""``--stop-after`` / ``train.time_limit``: the run stops at a unit boundary (exit code 75) and
the same command finishes it, identical to a run never stopped."""

import json
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from allwen.config import load_config
from allwen.config.schema import parse_duration
from allwen.errors import STOPPED_EXIT_CODE, StoppedAtBoundary
from allwen.pipeline import run_pipeline
from allwen.runfolder import RunFolder, UnitFolder

OVERRIDES = ["data.image_size=32", "split.folds=2", "split.test=0.25", "train.stage1.epochs=1",
             "train.stage2.epochs=1", "train.batch_size=16", "evaluation.bootstrap=50", "data.num_workers=0",
             "scenarios={}"]


def test_durations_read_as_seconds_and_bad_ones_name_the_key():
    assert parse_duration("11h30m") == 41400 and parse_duration("45m") == 2700 and parse_duration("90") == 90
    assert parse_duration("1.5h") == 5400
    with pytest.raises(ValueError, match=r"train.time_limit='soon': write a duration like 11h30m"):
        parse_duration("soon")
    with pytest.raises(ValueError, match="train.time_limit"):
        load_config("demo", ["train.time_limit=later"])
    assert load_config("demo", ["train.time_limit=2h"]).train.time_limit == "2h"


def test_cli_stops_before_the_next_unit_with_exit_code_75_and_says_how_to_resume(synth_root, tmp_path):
    from allwen.cli import app

    out = tmp_path / "run"
    args = ["run", "demo", "--out", str(out), "--quiet", "--stop-after", "0.000001",
            "--set", f"data.path={synth_root / 'training_data'}", *[a for o in OVERRIDES for a in ("--set", o)]]
    done = CliRunner().invoke(app, args)
    assert done.exit_code == STOPPED_EXIT_CODE == 75, done.output
    assert "at a unit boundary: 0 of" in done.output and "run the same command again" in done.output
    assert not [u for u in RunFolder(out).units_on_disk() if u.done]  # the deadline passed before the first unit
    assert json.loads(RunFolder(out).status_path.read_text())["state"] == "stopped"
    assert not RunFolder(out).summary_path.exists()


def _predictions(run: Path) -> dict[str, pd.DataFrame]:
    return {str(p.relative_to(run)): pd.read_csv(p) for p in sorted(p for u in RunFolder(run).units_on_disk() for p in u.prediction_files())}


@pytest.mark.slow  # two tiny runs of 2 units each: ~1 min on 2 busy cores
def test_a_stopped_run_ends_at_a_unit_boundary_and_a_rerun_finishes_identically(synth_root, tmp_path, monkeypatch,
                                                                                   late_after_first_training):
    cfg = load_config("demo", [f"data.path={synth_root / 'training_data'}", *OVERRIDES])
    run_pipeline(cfg, tmp_path / "whole", quiet=True)

    late_after_first_training(monkeypatch)  # the deadline passes once the first training has finished
    with pytest.raises(StoppedAtBoundary, match="1 of 2 units finished"):
        run_pipeline(cfg, tmp_path / "stopped", quiet=True, stop_after=3600)
    units = [u.path for u in RunFolder(tmp_path / "stopped").units_on_disk()]
    assert len(units) == 1 and UnitFolder(units[0]).info_path.exists()  # one whole unit, nothing half-written
    monkeypatch.undo()
    run_pipeline(cfg, tmp_path / "stopped", quiet=True)
    a, b = _predictions(tmp_path / "whole"), _predictions(tmp_path / "stopped")
    assert a.keys() == b.keys() and len(a) == 4
    for name in a:
        pd.testing.assert_frame_equal(a[name], b[name], check_exact=False, atol=1e-6, obj=name)
