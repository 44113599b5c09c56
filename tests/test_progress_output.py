"""What `allwen run` prints into a pipe: progress lines on a cadence by default; with --quiet only
warnings and the result (a subset of the default output, and shorter)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # three tiny runs in subprocesses (~80 s); tests/training/test_progress.py is the fast check

ROOT = Path(__file__).resolve().parents[1]
TINY = ["split.folds=2", "split.test=0.3", "scenarios={train.lr: [0.01]}", "train.stage1.epochs=2", "train.stage2=null",
        "train.batch_size=16", "evaluation.bootstrap=50", "evaluation.stratify=false"]
ELAPSED = re.compile(r"^INFO allwen.progress: progress: \d+/2 units done; .*; (?:(\d+) min )?(\d+) s elapsed, ")


def allwen(*args: str, every: str = "30") -> list[str]:
    """Run the CLI with stdout and stderr piped (not a terminal); its lines."""
    env = {**os.environ, "ALLWEN_PROGRESS_EVERY": every, "HF_HUB_OFFLINE": "1",
           "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, "-m", "allwen", *args], capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    return (done.stderr + done.stdout).splitlines()


@pytest.fixture(scope="module")
def piped(synth_root, tmp_path_factory):
    out = tmp_path_factory.mktemp("progress") / "run"
    sets = [a for item in TINY + [f"data.path={synth_root / 'training_data'}"] for a in ("--set", item)]
    first = allwen("run", "demo", "--out", str(out), *sets, every="0.5")
    return out, sets, first


def test_progress_lines_in_a_pipe_on_their_cadence(piped):
    _, _, lines = piped
    beats = [ELAPSED.match(line) for line in lines if " units done; " in line and "evaluating" not in line]
    assert len(beats) >= 3 and all(beats), [line for line in lines if "progress" in line]
    seconds = [60 * int(b.group(1) or 0) + int(b.group(2)) for b in beats]
    gaps = [b - a for a, b in zip(seconds, seconds[1:])]
    assert max(gaps) <= 3, gaps  # every 0.5 s asked; whole seconds printed, a busy machine allowed for
    assert any("unit 1/2 lr=0.01 fold 0, stage1 epoch" in line for line in lines)
    assert any("about " in line and " left" in line for line in lines)
    assert lines[-1].startswith("report: ")
    assert any("progress: 2/2 units done; evaluating ensembles and statistics" in line for line in lines)  # timed too


def test_quiet_prints_a_shorter_subset(piped):
    """On the finished run (both resume and re-evaluate the same way): --quiet is warnings and the result."""
    out, sets, _ = piped
    default = allwen("run", "demo", "--out", str(out), *sets)
    quiet = allwen("run", "demo", "--out", str(out), *sets, "--quiet")
    assert set(quiet) <= set(default) and len(quiet) < len(default), (quiet, default)
    assert quiet[-1].startswith("report: ")
    assert all(line.startswith("WARNING ") or line.startswith("report: ") for line in quiet), quiet
