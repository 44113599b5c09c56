"""Grid progress where no one watches a terminal: a line from a timer, whatever the epochs do."""

from __future__ import annotations

import logging
import re
import time

import pytest

from allwen.progress import duration, interval
from allwen.training.progress import GridProgress

LINE = re.compile(r"progress: (\d+)/(\d+) units done; (.*); (.+) elapsed, (.+)")


def test_a_line_every_interval_with_units_stage_elapsed_and_time_left(caplog):
    caplog.set_level(logging.INFO, logger="allwen.progress")
    with GridProgress(n_units=2, total_epochs=4, every=0.1) as progress:
        progress.start_unit(0, "lr=0.01", 0)
        progress.epoch("stage1", 0, 2, {"val_accuracy": 0.5})
        time.sleep(0.65)  # one long epoch: the timer speaks, the training loop does not
        progress.epoch("stage1", 1, 2, {"val_accuracy": 0.75})
        progress.end_unit(2, 2)
        progress.start_unit(1, "lr=0.01", 1)
        time.sleep(0.25)
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("progress:")]
    beats = [LINE.match(line) for line in lines]
    assert all(beats), lines
    assert len(lines) >= 5, lines  # ~9 timer lines in 0.9 s, with slack for a busy machine
    mid = next(b for b in beats if "stage1 epoch 1/2" in b.group(3))
    assert mid.group(1, 2) == ("0", "2") and "unit 1/2 lr=0.01 fold 0" in mid.group(3)
    assert mid.group(5).startswith("about ") and mid.group(5).endswith(" left")
    assert beats[-1].group(1) == "1" and "unit 2/2 lr=0.01 fold 1" in beats[-1].group(3)
    assert any("stage1 epoch 2/2 accuracy 0.750" in r.getMessage() for r in caplog.records)  # the per-epoch line


def test_quiet_logs_no_progress(caplog):
    caplog.set_level(logging.INFO, logger="allwen.progress")
    with GridProgress(n_units=1, total_epochs=1, quiet=True, every=0.05) as progress:
        progress.start_unit(0, "lr=0.01", 0)
        time.sleep(0.2)
        progress.epoch("stage1", 0, 1, {})
        progress.end_unit(1, 1)
    assert caplog.records == []


def test_time_left_from_the_pace_of_epochs_trained_here():
    progress = GridProgress(n_units=3, total_epochs=30, every=60)
    progress.skip_unit(10)  # finished earlier: took no time now, must not speed the estimate up
    assert progress.line().startswith("progress: 1/3 units done; starting; 0 s elapsed, time left known after")
    progress._start -= 100
    progress.epoch("stage1", 0, 10, {})  # 1 epoch in 100 s, 19 to go
    assert progress.line().endswith("1 min 40 s elapsed, about 31 min 40 s left")


def test_interval_from_the_environment(monkeypatch):
    monkeypatch.setenv("ALLWEN_PROGRESS_EVERY", "2.5")
    assert interval() == 2.5
    monkeypatch.delenv("ALLWEN_PROGRESS_EVERY")
    assert interval() == 30.0  # at least once a minute by default
    monkeypatch.setenv("ALLWEN_PROGRESS_EVERY", "120")
    with pytest.raises(ValueError, match="ALLWEN_PROGRESS_EVERY='120': give seconds above 0 and at most 60"):
        interval()


def test_duration_words():
    assert [duration(s) for s in (4.4, 65, 3725)] == ["4 s", "1 min 05 s", "1 h 02 min"]
