"""One process per run folder: a second command is refused at once, naming the holder."""

from __future__ import annotations

import json
import os
import signal
import socket
import sys
import subprocess
import time

import pytest

from allwen.lock import HOLDER_NAME, RunLockedError, run_lock

from .conftest import allwen, allwen_popen, run_args

HOLD = "import sys, time; from allwen.lock import run_lock\nwith run_lock(sys.argv[1], 'holder'):\n print('held', flush=True); time.sleep(600)"


def _hold(folder):
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(folder)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_a_second_process_is_refused_with_the_holders_name_and_a_killed_holder_frees_the_folder(tmp_path):
    holder = _hold(tmp_path / "run")
    try:
        with pytest.raises(RunLockedError) as info:
            with run_lock(tmp_path / "run"):
                pass
        assert f"pid {holder.pid} on {socket.gethostname()}" in str(info.value) and "(holder)" in str(info.value)
    finally:
        os.kill(holder.pid, signal.SIGKILL)  # no cleanup: the holder file stays behind
        holder.wait()
    assert json.loads((tmp_path / "run" / HOLDER_NAME).read_text())["pid"] == holder.pid  # stale
    with run_lock(tmp_path / "run", "next"):  # taken over at once
        assert json.loads((tmp_path / "run" / HOLDER_NAME).read_text())["pid"] == os.getpid()
    assert not (tmp_path / "run" / HOLDER_NAME).exists()


def test_report_on_a_folder_in_use_is_refused(run_copy):
    holder = _hold(run_copy)
    try:
        result = allwen("report", str(run_copy))
        assert result.returncode == 2 and f"is in use by pid {holder.pid}" in result.stderr
        assert "Traceback" not in result.stderr
    finally:
        holder.kill()
        holder.wait()


def test_two_allwen_runs_on_one_folder(synth_root, tmp_path):
    out = tmp_path / "run"
    # the first run trains for long enough to be refused against; it is killed at the end
    first = allwen_popen(*run_args(synth_root / "training_data", out), "--set", "train.stage1.epochs=200",
                         "--set", "train.stage1.patience=null")
    try:
        deadline = time.time() + 120
        while not (out / HOLDER_NAME).exists() and first.poll() is None and time.time() < deadline:
            time.sleep(0.05)
        assert first.poll() is None, first.communicate()[1][-2000:]
        second = allwen(*run_args(synth_root / "training_data", out))
        assert second.returncode == 2
        assert f"is in use by pid {first.pid} on {socket.gethostname()}" in second.stderr
        assert "allwen run demo" in second.stderr and "Traceback" not in second.stderr
        assert first.poll() is None  # both were refused at once, not after the first had finished
    finally:
        first.kill()
        first.wait()
