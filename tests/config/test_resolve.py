"""CONFIG arguments: presets by name, files by path, and an error that names both when both exist."""

from __future__ import annotations

import pytest

from allwen.config import ConfigError, load_config
from allwen.config.load import resolve_source


def test_a_bare_preset_name_is_the_preset(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert resolve_source("demo") == ("demo", None)
    assert load_config("demo").name == "demo"
    assert load_config("preset:experiment_a").name == "experiment_a"


def test_a_folder_named_like_a_preset_is_an_error_naming_both(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "demo").mkdir()
    with pytest.raises(ConfigError) as err:
        load_config("demo")
    message = str(err.value)
    assert "preset 'demo'" in message and str(tmp_path / "demo") in message
    assert "preset:demo" in message and "\n" not in message
    assert "Errno" not in message
    assert load_config("preset:demo").name == "demo"  # the way out it names works


def test_a_file_named_like_a_preset_is_an_error_naming_both(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "demo").write_text("name: mine\n")
    with pytest.raises(ConfigError, match=r"preset:demo for the preset, or \./demo for the file"):
        load_config("demo")
    assert load_config("./demo").name == "mine"
    assert load_config("preset:demo").name == "demo"


def test_paths_are_files_even_when_their_stem_is_a_preset(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "demo.yaml").write_text("name: my_demo\n")
    assert load_config("demo.yaml").name == "my_demo"
    assert load_config("demo").name == "demo"  # no file named exactly `demo`: the preset
    with pytest.raises(ConfigError, match="for the built-in preset write experiment_a"):
        load_config("experiment_a.yaml")


def test_a_folder_or_unknown_name_is_one_clear_line(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "configs").mkdir()
    with pytest.raises(ConfigError, match="configs: is a folder"):
        load_config("configs")
    with pytest.raises(ConfigError, match="no such file and not a preset"):
        load_config("nothing_here")
    with pytest.raises(ConfigError, match="no preset 'nope'"):
        load_config("preset:nope")


def test_allwen_demo_finds_its_preset_beside_a_folder_named_demo(tmp_path, monkeypatch):
    """`allwen demo --out demo` and then `allwen demo` again must not trip over the folder."""
    import allwen.demo as demo

    class Stop(Exception):
        pass

    def first_run(cfg, out, quiet=False):
        seen.append(cfg.name)
        raise Stop

    monkeypatch.chdir(tmp_path)
    (tmp_path / "demo").mkdir()
    seen: list[str] = []
    monkeypatch.setattr(demo, "generate_cnmc", lambda root, **kw: {"n_images": 0, "root": root})
    monkeypatch.setattr(demo, "run_pipeline", first_run)
    with pytest.raises(Stop):
        demo.run_demo(tmp_path / "out")
    assert seen == ["demo"]
