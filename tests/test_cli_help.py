"""The command line speaks to people: every option explained in words, no type tags, python -m allwen."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import click
import typer
from typer.testing import CliRunner

from allwen.cli import app

runner = CliRunner()
ROOT = Path(__file__).resolve().parents[1]
TAG = re.compile(r"<(str|int|float|bool|path|list\[[^\]]*\]|[a-z ]+ range|[a-z_]+)>|\{[a-z_]+\}")


def _commands() -> dict[str, click.Command]:
    group = typer.main.get_command(app)
    return dict(group.commands)


def _help(*args: str) -> str:
    result = runner.invoke(app, [*args, "--help"], env={"COLUMNS": "200", "TERM": "dumb"}, prog_name="allwen")
    assert result.exit_code == 0, result.output
    return result.output


def test_every_argument_and_option_of_every_command_has_help_in_words():
    commands = _commands()
    assert {"run", "demo", "serve", "predict", "export", "synth", "config"} <= set(commands)
    missing = [f"{name} {param.name}" for name, cmd in commands.items() for param in cmd.params
               if param.name != "help" and not (getattr(param, "help", None) or "").strip()]
    assert not missing, f"options without help: {missing}"


def test_help_pages_show_no_programmer_tags():
    for name in _commands():
        text = _help(name)
        assert not TAG.search(text), f"allwen {name} --help shows {TAG.search(text).group(0)!r}"
    text = _help("run")
    assert "Usage: allwen run [OPTIONS] CONFIG" in text
    assert "KEY=VALUE" in text and "--out" in text and "RUN" in text
    assert "Usage: allwen predict [OPTIONS] BUNDLE IMAGE..." in _help("predict")
    assert "Usage: allwen compare [OPTIONS] RUN..." in _help("compare")


def test_the_options_the_issue_named_are_explained():
    assert "port of the web page" in _help("serve")
    assert "random seed" in _help("synth")
    demo = _help("demo")
    assert "only warnings and the result" in demo and "at least every 30 s" in " ".join(demo.split())
    assert "few-second" not in demo and "minute" in demo  # --quick says what it costs, measured
    assert "--no-quick" not in demo
    assert "champion[lr=0.001]" in _help("export")  # brackets survive the rich markup


def test_python_dash_m_allwen_is_the_allwen_command():
    from allwen import __version__

    env = {"PYTHONPATH": str(ROOT / "src"), "PATH": "/usr/bin:/bin", "COLUMNS": "120"}
    done = subprocess.run([sys.executable, "-m", "allwen", "--version"], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == f"allwen {__version__}", done.stderr
    usage = subprocess.run([sys.executable, "-m", "allwen", "presets", "--help"], capture_output=True, text=True,
                           env=env, timeout=120)
    assert "Usage: allwen presets" in usage.stdout


def test_a_folder_named_like_a_preset_is_one_line_naming_both(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "demo").mkdir()
    result = runner.invoke(app, ["config", "demo"])
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and "preset 'demo'" in lines[0] and "preset:demo" in lines[0]
    assert "Errno" not in result.output
    chosen = runner.invoke(app, ["run", "preset:demo", "--dry-run", "--json"])
    assert chosen.exit_code == 0, chosen.output


def test_the_docs_option_reference_lists_every_option_with_its_help():
    from allwen.cli_format import cli_reference_markdown

    text = cli_reference_markdown(app)
    for name, command in _commands().items():
        assert f"### allwen {name}\n" in text
        for param in command.params:
            if param.name != "help":
                assert (param.help or "").split("\\[")[0] in text, (name, param.name)
    assert "| `--port` `PORT` |" in text and "| `--quick` |" in text
    assert not TAG.search(text)
