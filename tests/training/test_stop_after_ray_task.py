"""A Ray task under ``--stop-after`` (``runner._train_remote``, called here in-process): a task
that starts after the deadline trains nothing; a unit that started before it finishes."""

import time

import allwen.training.runner as runner


def test_a_task_that_starts_after_the_deadline_trains_nothing(monkeypatch, tmp_path):
    def never(*args, **kwargs):
        raise AssertionError("trained after the deadline")

    monkeypatch.setattr(runner, "train_group", never)
    assert runner._train_remote([], None, None, str(tmp_path), 1, time.time() - 1) is None
    assert not any(tmp_path.iterdir())


def test_a_unit_in_flight_when_the_deadline_passes_finishes(monkeypatch, tmp_path):
    def slow(*args, **kwargs):
        time.sleep(0.3)  # the deadline passes during the unit
        return [{"name": "lr=0.01/fold_0"}]

    monkeypatch.setattr(runner, "train_group", slow)
    monkeypatch.setenv("ALLWEN_THREADS", "2")  # the task sets its share: restored after the test
    deadline = time.time() + 0.1
    assert runner._train_remote([], None, None, str(tmp_path), 1, deadline) == [{"name": "lr=0.01/fold_0"}]
    assert time.time() > deadline
