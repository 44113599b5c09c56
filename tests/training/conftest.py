"""Fixtures of the training tests."""

from __future__ import annotations

import time

import pytest


@pytest.fixture
def late_after_first_training():
    """``apply(patcher)``: the runner's clock jumps past any deadline once its first training has finished
    (``patcher``: ``monkeypatch`` or a ``pytest.MonkeyPatch.context()``)."""
    import allwen.training.runner as runner

    def apply(patcher: pytest.MonkeyPatch) -> None:
        trained = []
        original = runner.train_group

        def train_then_late(*args, **kwargs):
            trained.append(1)
            return original(*args, **kwargs)

        class Clock:
            @staticmethod
            def monotonic():
                return time.monotonic() + (1e6 if trained else 0)

        patcher.setattr(runner, "train_group", train_then_late)
        patcher.setattr(runner, "time", Clock)

    return apply
