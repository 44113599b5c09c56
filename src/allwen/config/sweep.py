"""Config transforms of a stepwise sweep (``sweep:``): each step as a plain grid config.

Pure functions of a :class:`Config`: the training plan (``allwen run --dry-run``) and the
sweep runner (:mod:`allwen.sweep`) both build their steps here.
"""

from __future__ import annotations

import copy
from typing import Any

from allwen.config.load import build_config, set_dotted
from allwen.config.schema import Config


def step_config(cfg: Config, k: int, winners: list[dict[str, Any]]) -> Config:
    """Step ``k`` (1-based) as a plain grid config: earlier winners fixed, its keys the scenarios."""
    raw = cfg.model_dump(mode="json")
    raw["sweep"] = []
    for settings in winners[: k - 1]:
        for key, value in settings.items():
            set_dotted(raw, key, value)
    raw["scenarios"] = copy.deepcopy(cfg.sweep[k - 1])
    return build_config(raw)


def stand_in_winners(cfg: Config) -> list[dict[str, Any]]:
    """Each step's first value: stands in for winners not decided yet (unit names do not depend on them)."""
    return [{key: values[0] for key, values in step.items()} for step in cfg.sweep]
