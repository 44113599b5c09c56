"""The layers hold: ``lint-imports`` keeps every contract of ``.importlinter`` (as ``.ci/run`` does),
and the contracts issue 16 asks for are among them."""

from __future__ import annotations

import configparser
import importlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _contracts() -> dict[str, configparser.SectionProxy]:
    parser = configparser.ConfigParser()
    parser.read(ROOT / ".importlinter")
    return {name.split(":", 2)[2]: parser[name] for name in parser.sections() if name.startswith("importlinter:contract:")}


def _lines(value: str) -> list[str]:
    return [line.strip() for line in value.splitlines() if line.strip()]


def test_the_asked_contracts_are_declared():
    contracts = _contracts()
    forbidden = {(src, dst) for c in contracts.values() if c.get("type") == "forbidden"
                 for src in _lines(c["source_modules"]) for dst in _lines(c["forbidden_modules"])}
    assert ("allwen.evaluation", "allwen.report") in forbidden
    assert ("allwen.training", "allwen.ensemble") in forbidden
    outside = {src for src, dst in forbidden if dst == "allwen.runfolder._paths"}
    packages = {p.name for p in (ROOT / "src" / "allwen").iterdir() if p.name not in ("runfolder", "__pycache__")
                and (p.suffix == ".py" or p.is_dir()) and p.stem not in ("__init__", "__main__")}
    assert {f"allwen.{p.removesuffix('.py')}" for p in packages} - outside <= {
        "allwen.errors", "allwen.failpoints", "allwen.io", "allwen.lock", "allwen.progress", "allwen.cli_format"}


def test_lint_imports_keeps_every_contract():
    exe = shutil.which("lint-imports") or str(Path(sys.executable).with_name("lint-imports"))
    if not Path(exe).is_file():
        pytest.skip("import-linter is not installed (pip install -c constraints.txt -e .[dev])")
    done = subprocess.run([exe], cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(ROOT / "src")})
    assert done.returncode == 0, done.stdout[-3000:]
    assert f"Contracts: {len(_contracts())} kept, 0 broken." in done.stdout


@pytest.mark.parametrize("gone", ["allwen.ensemble.checks", "allwen.serve.runfiles"])  # now runfolder, evaluation.selection
def test_what_the_redesign_replaced_is_deleted(gone):
    with pytest.raises(ModuleNotFoundError):
        importlib.import_module(gone)
