"""Typed records of a run folder: older files read with defaults, newer keys kept, bad files named."""

from __future__ import annotations

import json

import pytest

from allwen.io import RunFileError
from allwen.runfolder import UnitFolder
from allwen.runfolder.records import EnsembleRecord, SweepRecord, SweepStep, SweepValue, UnitInfo


def test_an_old_unit_record_reads_with_defaults_and_a_newer_key_is_kept(tmp_path):
    path = UnitFolder(tmp_path).info_path
    path.write_text(json.dumps({"fold": 2, "train_metrics": {"accuracy": 0.9, "stage": "stage1"}, "added_later": 1}))
    info = UnitInfo.read(path, "fix it")
    assert info.fold == 2 and info.train_metrics.accuracy == 0.9 and info.train_metrics.epoch is None
    assert info.parameters.total is None and info.files == {} and info.micro_batch == {}
    assert info.model_dump()["added_later"] == 1  # a later allwen's field survives a rewrite by this one


def test_a_bad_unit_record_names_the_file_the_key_and_the_fix(tmp_path):
    path = UnitFolder(tmp_path).info_path
    path.write_text(json.dumps({"fold": "second"}))
    with pytest.raises(RunFileError, match=r"unit\.json: not a unit record \(at fold: .*\); retrain it"):
        UnitInfo.read(path, "retrain it")


def test_an_ensemble_record_needs_its_members_and_weights():
    record = EnsembleRecord(name="intra/kappa", kind="intra", weighting="kappa", members=["a", "b"], weights=[0.4, 0.6])
    assert record.scores == [] and record.scenario is None
    with pytest.raises(ValueError, match="weights"):
        EnsembleRecord(name="x", kind="intra", weighting="kappa", members=["a"])


def _step(k: int, winner: float) -> SweepStep:
    value = SweepValue(scenario=f"lr={winner}", settings={"train.lr": winner}, mean=0.8)
    return SweepStep(step=k, keys=["train.lr"], metric="accuracy", values=[value], winner={"train.lr": winner},
                     winner_scenario=value.scenario)


def test_a_sweep_record_adds_or_replaces_a_step_in_order():
    record = SweepRecord(metric="accuracy", n_steps=3).with_step(_step(2, 0.1)).with_step(_step(1, 0.01))
    assert [s.step for s in record.steps] == [1, 2] and record.decided(3) is None
    replaced = record.with_step(_step(2, 0.5))
    assert replaced.decided(2).winner == {"train.lr": 0.5} and record.decided(2).winner == {"train.lr": 0.1}
    assert [s.step for s in replaced.steps] == [1, 2]
