"""Every preset resolves to exactly the config it did before the presets were rewritten with
``extends:`` (a preset that is a variant of another states only what differs).

``preset_snapshot.json`` was written from the presets as they stood before the rewrite:
``python tests/config/test_preset_snapshot.py`` writes it again (do that only on purpose,
when a preset is meant to change)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from allwen.config import list_presets, load_config

SNAPSHOT = Path(__file__).parent / "data" / "preset_snapshot.json"


def resolved(preset: str, cwd: Path) -> dict:
    """``preset``'s resolved config as JSON values, loaded in ``cwd``; a preset's relative paths are
    relative to the shell, so ``cwd`` is written ``<cwd>`` (and its parent ``<cwd>/..``)."""
    text = json.dumps(load_config(preset).model_dump(mode="json"), sort_keys=True)
    return json.loads(text.replace(str(cwd), "<cwd>").replace(str(cwd.parent), "<cwd>/.."))


def test_the_snapshot_covers_every_preset():
    assert sorted(json.loads(SNAPSHOT.read_text())) == list_presets()


@pytest.mark.parametrize("preset", list_presets())
def test_each_preset_resolves_to_its_snapshot(preset, tmp_path, monkeypatch):
    cwd = tmp_path.resolve() / "here"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    assert resolved(preset, cwd) == json.loads(SNAPSHOT.read_text())[preset]


if __name__ == "__main__":
    import os
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        here = Path(folder).resolve() / "here"
        here.mkdir()
        os.chdir(here)
        snapshot = {name: resolved(name, here) for name in list_presets()}
    SNAPSHOT.write_text(json.dumps(snapshot, indent=1, sort_keys=True) + "\n")
    print(f"wrote {SNAPSHOT} ({len(snapshot)} presets)")
