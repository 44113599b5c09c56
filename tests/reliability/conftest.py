"""A tiny finished run and helpers to run the real command line in a child process."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from allwen.runfolder import RunFolder

TINY = [
    "data.image_size=32", "split.folds=2", "split.test=0.3", "train.stage1.epochs=1", "train.stage2.epochs=1",
    "train.batch_size=16", "evaluation.bootstrap=50", "scenarios={train.lr: [0.01, 0.001]}",
]


def run_args(data_path: Path, out: Path) -> list[str]:
    args = ["run", "demo", "--out", str(out), "--quiet", "--set", f"data.path={data_path}"]
    for item in TINY:
        args += ["--set", item]
    return args


def allwen(*args: str, env: dict[str, str] | None = None, timeout: float = 300, **popen) -> subprocess.CompletedProcess:
    """``allwen ARGS`` in a fresh process (so that it can be killed like a real one)."""
    return subprocess.run([sys.executable, "-m", "allwen.cli", *args], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=timeout, **popen)


def allwen_popen(*args: str, env: dict[str, str] | None = None, **popen) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "allwen.cli", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env={**os.environ, **(env or {})}, **popen)


def comparable_summary(run_dir: Path) -> dict:
    """summary.json without what differs between two identical runs (the time it was written)."""
    summary = json.loads(RunFolder(run_dir).summary_path.read_text())
    summary.pop("created", None)
    return summary


@pytest.fixture(scope="package")
def reference_run(synth_root, tmp_path_factory) -> Path:
    """An uninterrupted tiny run (2 learning rates x 2 folds, two stages), made in this process."""
    from typer.testing import CliRunner

    from allwen.cli import app

    out = tmp_path_factory.mktemp("reliability") / "reference"
    result = CliRunner().invoke(app, run_args(synth_root / "training_data", out))
    assert result.exit_code == 0, result.output
    return out


@pytest.fixture
def run_copy(reference_run, tmp_path) -> Path:
    """A private copy of the finished run, to tamper with."""
    target = tmp_path / "run"
    shutil.copytree(reference_run, target)
    return target


@pytest.fixture(scope="package")
def bundle(reference_run, tmp_path_factory) -> Path:
    """One unit of the reference run, exported as a lab gets it."""
    from allwen.export import export_bundle

    return export_bundle(reference_run, tmp_path_factory.mktemp("bundle") / "b", "lr=0.01/fold_0")


@pytest.fixture
def patient_folder(synth_root, tmp_path) -> Path:
    """One patient's folder of 4 C-NMC cells (as in the probe: ``ex/``)."""
    folder = tmp_path / "ex"
    folder.mkdir()
    cells = sorted((synth_root / "training_data" / "fold_0" / "hem").glob("*.bmp"))[:4]
    for cell in cells:
        shutil.copy(cell, folder / cell.name)
    return folder
