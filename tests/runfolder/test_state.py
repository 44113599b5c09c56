"""The run folder's bookkeeping (runfolder/state.py): run.json, resume checks, finished units."""

from __future__ import annotations

import json

import pytest

from allwen.config import load_config
from allwen.config.load import build_config
from allwen.runfolder import RunFolder
from allwen.runfolder.state import RunStateError, check_same_config, check_units_finished, diff_keys, write_status


def _folder(tmp_path, *overrides):
    cfg = load_config("demo", ["split.folds=2", "scenarios={train.lr: [0.01, 0.001]}", *overrides])
    folder = RunFolder(tmp_path / "run")
    folder.write_config(cfg)
    return folder, cfg


def test_status_records_version_and_start_once(tmp_path):
    folder = RunFolder(tmp_path)
    write_status(folder, state="training")
    first = json.loads(folder.status_path.read_text())
    write_status(folder, state="finished")
    again = json.loads(folder.status_path.read_text())
    assert {"allwen_version", "started"} <= set(first) and first["state"] == "training"
    assert again["started"] == first["started"] and again["state"] == "finished"


def test_diff_keys_names_every_dotted_key():
    assert diff_keys({"a": {"b": 1, "c": 2}, "d": 3}, {"a": {"b": 1, "c": 5}, "e": 4}) == ["a.c", "d", "e"]


def test_speed_keys_resume_and_another_config_is_refused_once_a_unit_finished(tmp_path, caplog):
    folder, cfg = _folder(tmp_path)
    check_same_config(folder, cfg, build_config)  # the same config: nothing to say
    faster = load_config("demo", ["split.folds=2", "scenarios={train.lr: [0.01, 0.001]}", "data.num_workers=1"])
    with caplog.at_level("INFO"):
        check_same_config(folder, faster, build_config)
    assert "resuming with other speed" in caplog.text
    (folder.unit_dir("lr=0.01", 0)).mkdir(parents=True)
    (folder.unit("lr=0.01", 0).info_path).write_text("{}")
    other = load_config("demo", ["split.folds=2", "scenarios={train.lr: [0.01, 0.001]}", "train.batch_size=8"])
    with pytest.raises(RunStateError, match="another config.*train.batch_size"):
        check_same_config(folder, other, build_config)


def test_a_folder_with_no_finished_unit_starts_again_with_a_new_config(tmp_path):
    folder, cfg = _folder(tmp_path)
    folder.splits_dir.mkdir()
    other = load_config("demo", ["split.folds=3"])
    check_same_config(folder, other, build_config)
    assert not folder.splits_dir.exists() and folder.config_path.exists()  # derived files gone, the config stays


def test_units_finished_names_the_missing_and_the_unplanned(tmp_path):
    folder, cfg = _folder(tmp_path)
    with pytest.raises(RunStateError, match="split.json not found"):
        check_units_finished(folder, ["lr=0.01"])
    folder.splits_dir.mkdir()
    folder.split_json.write_text(json.dumps({"folds": [{"train": 1, "val": 1}, {"train": 1, "val": 1}]}))
    for k in (0, 1):
        folder.unit_dir("lr=0.01", k).mkdir(parents=True)
        folder.unit("lr=0.01", k).info_path.write_text("{}")
    check_units_finished(folder, ["lr=0.01"])
    with pytest.raises(RunStateError, match=r"2 of 4 units are finished \(missing: lr=0.001/fold_0, lr=0.001/fold_1\)"):
        check_units_finished(RunFolder(folder.root), ["lr=0.01", "lr=0.001"])
    folder.unit_dir("lr=0.5", 0).mkdir(parents=True)  # a folder the config does not plan
    with pytest.raises(RunStateError, match=r"units the config does not plan: \['lr=0.5/fold_0'\]"):
        check_units_finished(RunFolder(folder.root), ["lr=0.01"])
