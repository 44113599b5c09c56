"""The Python API (docs/user-guide/python-api.md): the page's example runs as written, and the
commands call the same functions."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

import allwen
from allwen import api
from allwen.cli import app
from allwen.bundle import BundleFolder
from allwen.runfolder import RunFolder

ROOT = Path(__file__).resolve().parents[1]
PAGE = ROOT / "docs" / "user-guide" / "python-api.md"


def example() -> str:
    found = re.search(r"<!-- api-example -->\s*```python\n(.*?)```", PAGE.read_text(), re.S)
    assert found, f"{PAGE}: the example block after <!-- api-example --> is missing"
    return found.group(1)


def test_the_names_are_the_api_functions():
    assert allwen.run is api.run and allwen.export_bundle is api.export_bundle and allwen.load_bundle is api.load_bundle
    import allwen.report as package  # the report package is the name's other owner: it stays callable

    assert allwen.report is package and callable(allwen.report)
    with pytest.raises(AttributeError):
        allwen.no_such_function  # noqa: B018


def test_import_allwen_stays_light():
    code = "import sys, allwen; print(sorted(m for m in ('allwen.api', 'torch', 'pandas', 'allwen.pipeline') if m in sys.modules))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                          env={"PYTHONPATH": str(ROOT / "src")})
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_overrides_as_dict_or_list():
    assert api._overrides({"train.lr": 0.001, "scenarios": {"train.lr": [0.01]}, "train.stage2": None}) == [
        "train.lr=0.001", 'scenarios={"train.lr": [0.01]}', "train.stage2=null"]
    assert api._overrides(["train.lr=0.001"]) == ["train.lr=0.001"]
    cfg = api.load("demo", {"train.lr": 0.001, "split.folds": 2})
    assert cfg.train.lr == 0.001 and cfg.split.folds == 2
    assert api.load(cfg, ["split.folds=3"]).split.folds == 3
    with pytest.raises(TypeError, match="list of 'key=value'"):
        api._overrides("train.lr=0.001")


def test_the_commands_call_the_api(monkeypatch, tmp_path):
    """`allwen run`, `report` and `export` go through allwen.api, so a script and the CLI cannot drift."""
    calls = []

    class Done:
        report_html = RunFolder(tmp_path).report_html

    monkeypatch.setattr(api, "run", lambda cfg, out, **kw: calls.append(("run", cfg.name, out, kw)) or Done())
    monkeypatch.setattr(api, "report", lambda run: calls.append(("report", run)) or Done.report_html)
    runner = CliRunner()
    result = runner.invoke(app, ["run", "demo", "--out", str(tmp_path / "r"), "--quiet", "--set", "split.folds=2"])
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["report", str(tmp_path / "r")])
    assert result.exit_code == 0, result.output
    assert calls[0][:3] == ("run", "demo", tmp_path / "r") and calls[0][3]["quiet"] is True
    assert calls[1] == ("report", tmp_path / "r")

    def fake_export(run, out, model, fmt, **options):
        calls.append(("export", run, out, model, fmt, options))
        raise ValueError("stop here")

    monkeypatch.setattr(api, "export_bundle", fake_export)
    result = runner.invoke(app, ["export", str(tmp_path / "r"), "--out", str(tmp_path / "b"),
                                 "--conformal-levels", "0.8,0.9"])
    assert result.exit_code == 2 and "stop here" in result.output
    assert calls[2][5]["conformal_levels"] == (0.8, 0.9) and calls[2][5]["target_accuracy"] == 0.99


def test_the_page_example_runs_as_written(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    exec(compile(example(), str(PAGE), "exec"), {"__name__": "__example__"})
    printed = capsys.readouterr().out
    assert "report: runs/tiny/report/index.html" in printed
    assert RunFolder(tmp_path / "runs" / "tiny").report_html.is_file()
    assert BundleFolder(tmp_path / "bundles" / "tiny").manifest_path.is_file()
    assert printed.count(".bmp") == 4  # four predicted rows
