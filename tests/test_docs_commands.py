"""Every `allwen` command the README and the docs show parses as written (`make docs-check` runs them)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from allwen.cli import app

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("docs_check", ROOT / "tools" / "docs_check.py")
docs_check = importlib.util.module_from_spec(spec)
sys.modules["docs_check"] = docs_check  # dataclasses look their module up
spec.loader.exec_module(docs_check)

COMMANDS = docs_check.commands()
runner = CliRunner()


def test_commands_are_found_in_the_pages(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("text `allwen x` inline is not a command\n```bash\nallwen run demo --out runs/d \\\n"
                    "  --set train.lr=0.01   # a comment\nallwen report runs/d && allwen report runs/e\n"
                    "make demo\n```\n```python\nallwen.run('demo')\n```\n")
    found = docs_check.commands([page])
    assert [c.text for c in found] == ["allwen run demo --out runs/d --set train.lr=0.01", "allwen report runs/d",
                                       "allwen report runs/e"]
    assert found[0].argv == ["run", "demo", "--out", "runs/d", "--set", "train.lr=0.01"]
    assert {c.page for c in COMMANDS} >= {"README.md", "docs/user-guide/getting-started.md"}


@pytest.mark.parametrize("command", COMMANDS, ids=[c.where for c in COMMANDS])
def test_documented_command_parses(command):
    result = runner.invoke(app, docs_check.parse_argv(command))
    assert result.exit_code == 0, f"{command.where}: {command.text}\n{result.output}"


RUNS = [c for c in COMMANDS if c.argv[0] == "run" and "--executor" not in c.argv]


@pytest.mark.parametrize("command", RUNS, ids=[c.where for c in RUNS])
def test_documented_run_is_a_valid_plan(command):
    """`--dry-run`: the preset, every --set key and value validate (nothing is trained or read).
    Without `--estimate`, which times real batches of the real backbone (tests/training/test_estimate.py
    tests it on a tiny model; `make docs-check` runs the documented one)."""
    argv = [arg for arg in command.argv if arg != "--estimate"] + ["--dry-run"]
    result = runner.invoke(app, argv)
    assert result.exit_code == 0, f"{command.where}: {command.text}\n{result.output}"
    assert " units, " in result.output or '"units": [' in result.output


def test_why_a_command_is_not_run(tmp_path):
    def why(text):
        return docs_check.why_not_run(docs_check.Command("p", 1, text), tmp_path)

    assert why("allwen presets") is None
    assert why("allwen run experiment_e --dry-run") is None
    assert why("allwen report runs/e --headline") == "runs/e is not here"
    assert why("allwen run experiment_e --out runs/e --set data.path=/no/such") == "data.path=/no/such is not here"
    assert why("allwen export RUN --out B") == "a template (placeholders in capitals or ...)"
    assert why("allwen serve bundles/a") == "a server (parsed only)"
    (tmp_path / "runs" / "e").mkdir(parents=True)
    assert why("allwen report runs/e --headline") is None


def test_make_docs_check_runs_the_checker():
    makefile = (ROOT / "Makefile").read_text()
    target = makefile[makefile.index("\ndocs-check:"):]
    assert "tools/docs_check.py $(ARGS)" in target.split("\n\n")[0]
    assert "make docs-check" in (ROOT / "docs" / "user-guide" / "getting-started.md").read_text()
