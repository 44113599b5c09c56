"""A truncated or invalid file anywhere in a run folder: one line naming it and the fix, no traceback."""

from __future__ import annotations

import signal
import time

import pytest

from .conftest import allwen, allwen_popen, run_args
from allwen.runfolder import RunFolder


def _truncate(path):
    data = path.read_bytes()
    path.write_bytes(data[: max(1, len(data) // 3)])


# file (relative to the run) -> a word the fix must contain
FILES = {
    "units/lr=0.01/fold_0/unit.json": "delete",
    "splits/split.json": "split",
    "splits/leakage.json": "split",
    "splits/split.csv": "split",
    "data/audit.json": "audit",
    "run.json": "delete it",
    "units/lr=0.001/fold_1/predictions_val.csv": "allwen run",
    "config.yaml": "restore",
}


@pytest.mark.parametrize("rel", sorted(FILES))
def test_a_truncated_run_file_is_named_with_its_fix(run_copy, rel):
    from typer.testing import CliRunner

    from allwen.cli import app

    _truncate(run_copy / rel)
    result = CliRunner().invoke(app, ["report", str(run_copy)])  # in this process: the same code, faster
    assert result.exit_code == 2, result.stderr
    line = result.stderr.strip().splitlines()[-1]  # INFO lines may come first; the error is last
    assert line.startswith("error: ") and str(run_copy / rel) in line and FILES[rel] in line, line
    assert "Traceback" not in result.stderr


def test_broken_yaml_config_then_debug_shows_the_traceback(run_copy):
    (run_copy / "config.yaml").write_text("name: demo\ndata: {path: [unclosed\n")
    result = allwen("report", str(run_copy))
    assert result.returncode == 2
    assert f"{run_copy / 'config.yaml'}: not valid YAML" in result.stderr and "Traceback" not in result.stderr
    debug = allwen("--debug", "report", str(run_copy))
    assert debug.returncode != 0 and "Traceback" in debug.stderr


def test_a_truncated_unit_json_on_resume_names_the_file(synth_root, run_copy):
    rel = "units/lr=0.001/fold_0/unit.json"
    _truncate(run_copy / rel)
    result = allwen(*run_args(synth_root / "training_data", run_copy))
    assert result.returncode == 2
    assert f"{run_copy / rel}: truncated or invalid JSON" in result.stderr and "Traceback" not in result.stderr


def test_truncated_ensemble_and_summary_files(run_copy):
    from allwen.io import RunFileError
    from allwen.runfolder import RunFolder

    folder = next(run_copy.glob("ensembles/*"))
    _truncate(folder / "ensemble.json")
    with pytest.raises(RunFileError, match="ensemble.json: truncated or invalid JSON"):
        RunFolder(run_copy).read_ensemble(folder)
    _truncate(RunFolder(run_copy).summary_path)
    result = allwen("report", str(run_copy), "--headline")
    assert result.returncode == 2 and "summary.json" in result.stderr and "Traceback" not in result.stderr


def test_ctrl_c_says_how_to_resume_and_exits_130(synth_root, tmp_path):
    out = tmp_path / "run"
    proc = allwen_popen(*run_args(synth_root / "training_data", out))
    deadline = time.time() + 120
    while not any(out.glob("units/*/fold_0/logs")) and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)  # interrupt during training, where Lightning used to turn Ctrl-C into exit(1)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr[-2000:]
    assert stderr.strip().endswith("interrupted: run the same command to resume") and "Traceback" not in stderr
    assert not any(out.glob("units/*/fold_0/unit.json"))  # it stopped in the first unit (resume: test_kill_resume)
