"""Units as Ray tasks: the same summary.json as the sequential executor; resume after the
driver is killed. Runs on a private local Ray instance with 2 CPUs."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from allwen.config import load_config
from allwen.pipeline import run_pipeline
from allwen.runfolder import RunFolder, UnitFolder

ray = pytest.importorskip("ray", reason="Ray is in the ray/dev extras: pip install 'allwen[ray]'")
pytestmark = [pytest.mark.slow, pytest.mark.timeout(1200)]  # ~2 min on 2 quiet cores (10 at load 6): three Ray starts

OVERRIDES = ["data.image_size=32", "split.folds=2", "split.test=0.25", "train.stage1.epochs=1",
             "train.stage2.epochs=1", "train.batch_size=16", "scenarios={train.lr: [0.01, 0.001]}",
             "evaluation.bootstrap=50", "data.num_workers=0"]
VOLATILE = {"created", "seconds", "started", "finished", "last_command_seconds", "path", "report_html"}


def _strip(obj):
    """summary.json without timings and absolute paths, floats rounded (other processes,
    other thread counts: the same arithmetic up to float rounding)."""
    if isinstance(obj, dict):
        return {k: _strip(v) for k, v in obj.items() if k not in VOLATILE}
    if isinstance(obj, list):
        return [_strip(v) for v in obj]
    if isinstance(obj, float):
        return round(obj, 6)
    if isinstance(obj, str) and os.sep in obj:
        return Path(obj).name
    return obj


def _summary(run: Path):
    return _strip(json.loads(RunFolder(run).summary_path.read_text()))


def _same_predictions(a: Path, b: Path) -> None:
    """Every unit's validation and test probabilities within 1e-6, and the same recorded threads."""
    import numpy as np
    import pandas as pd

    files = sorted(p.relative_to(a) for u in RunFolder(a).units_on_disk() for p in u.prediction_files())
    assert len(files) == 8
    for name in files:
        x, y = pd.read_csv(a / name), pd.read_csv(b / name)
        cols = [c for c in x if c.startswith("prob")]
        np.testing.assert_allclose(x[cols].to_numpy(), y[cols].to_numpy(), rtol=0, atol=1e-6, err_msg=str(name))
    for info in (u.info_path for u in RunFolder(a).units_on_disk() if u.done):
        assert json.loads(info.read_text())["threads"] == json.loads((b / info.relative_to(a)).read_text())["threads"]


def test_ray_executor_matches_sequential_and_resumes_after_the_driver_is_killed(synth_root, tmp_path):
    data = synth_root / "training_data"
    cfg = load_config("demo", [f"data.path={data}", *OVERRIDES])
    # the thread budget of a Ray task with 1 CPU (each unit fixes its threads from the budget)
    with pytest.MonkeyPatch.context() as env:
        env.setenv("ALLWEN_THREADS", "1")
        run_pipeline(cfg, tmp_path / "sequential", quiet=True)

    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        run_pipeline(cfg, tmp_path / "ray", quiet=True, executor="ray")
    finally:
        ray.shutdown()
    assert _summary(tmp_path / "ray") == _summary(tmp_path / "sequential")
    _same_predictions(tmp_path / "ray", tmp_path / "sequential")

    # the driver (allwen run --executor ray) killed with SIGKILL once a unit finished
    out = tmp_path / "killed"
    cmd = [sys.executable, "-m", "allwen.cli", "run", "demo", "--out", str(out), "--quiet", "--executor", "ray",
           "--set", f"data.path={data}", *[a for o in OVERRIDES for a in ("--set", o)]]
    driver = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while not _finished_units(out) and driver.poll() is None and time.time() < deadline:
        time.sleep(0.2)
    driver.send_signal(signal.SIGKILL)
    driver.wait()
    finished = _finished_units(out)
    assert 1 <= len(finished) < 4, "kill the driver while units remain"
    assert not RunFolder(out).summary_path.exists()
    again = subprocess.run(cmd, capture_output=True, text=True)
    assert again.returncode == 0, again.stderr[-2000:]
    assert _summary(out) == _summary(tmp_path / "sequential")



def _finished_units(out: Path) -> list[Path]:
    """The unit folders whose unit.json is written (a unit writes it last)."""
    return sorted(p for p in RunFolder(out).units_dir.glob("*/fold_*") if UnitFolder(p).done)

def test_ray_stop_after_trains_no_unit_after_the_deadline_exits_75_and_a_rerun_finishes_as_sequential(
        synth_root, tmp_path, monkeypatch, late_after_first_training):
    """One unit finished before the deadline (a sequential start, stopped by its clock), then
    ``--executor ray --stop-after`` with the deadline already passed: no Ray task trains, exit 75
    with the count and how to resume; the same command without the limit finishes the run to the
    sequential executor's summary.json."""
    from allwen.errors import STOPPED_EXIT_CODE, StoppedAtBoundary

    data = synth_root / "training_data"
    cfg = load_config("demo", [f"data.path={data}", *OVERRIDES])
    monkeypatch.setenv("ALLWEN_THREADS", "1")  # a 1-CPU Ray task's budget: the same arithmetic
    run_pipeline(cfg, tmp_path / "sequential", quiet=True)

    out = tmp_path / "stopped"
    with pytest.MonkeyPatch.context() as late:
        late_after_first_training(late)
        with pytest.raises(StoppedAtBoundary, match="1 of 4 units finished"):
            run_pipeline(cfg, out, quiet=True, stop_after=3600)
    first = _finished_units(out)
    assert len(first) == 1

    cmd = [sys.executable, "-m", "allwen.cli", "run", "demo", "--out", str(out), "--quiet", "--executor", "ray",
           "--set", f"data.path={data}", *[a for o in OVERRIDES for a in ("--set", o)]]
    env = {**os.environ, "ALLWEN_THREADS": "2"}  # the private Ray instance's CPUs: 2 tasks of 1 CPU
    stopped = subprocess.run([*cmd, "--stop-after", "0.000001"], capture_output=True, text=True, env=env)
    assert stopped.returncode == STOPPED_EXIT_CODE == 75, stopped.stderr[-2000:]
    assert "at a unit boundary: 1 of 4 units finished" in stopped.stderr
    assert "run the same command again" in stopped.stderr
    assert _finished_units(out) == first  # no task started after the deadline trained
    assert not list(RunFolder(out).units_dir.rglob("*.tmp*"))
    assert json.loads(RunFolder(out).status_path.read_text())["state"] == "stopped"
    assert not RunFolder(out).summary_path.exists()

    again = subprocess.run(cmd, capture_output=True, text=True, env=env)
    assert again.returncode == 0, again.stderr[-2000:]
    assert _summary(out) == _summary(tmp_path / "sequential")
    _same_predictions(out, tmp_path / "sequential")
