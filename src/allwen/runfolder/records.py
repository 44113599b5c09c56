"""Typed records of a run folder: ``unit.json``, ``ensemble.json``, ``sweep.json``.

They allow extra keys, so a later allwen can add a field that an older reader ignores, and
give every key an older allwen may not have written a default.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

from pydantic import BaseModel, ConfigDict, ValidationError

from allwen.io import RunFileError, read_json


class _Open(BaseModel):
    model_config = ConfigDict(extra="allow")


class TrainMetrics(_Open):
    """The kept epoch's training accuracy and loss (running, as Keras reports them)."""

    stage: Optional[str] = None
    epoch: Optional[int] = None
    accuracy: Optional[float] = None
    loss: Optional[float] = None


class ParameterCounts(_Open):
    total: Optional[int] = None
    stage1_trainable: Optional[int] = None
    stage2_trainable: Optional[int] = None


class UnitInfo(_Open):
    """``unit.json``: a finished unit's facts and the sha256 of the files it wrote."""

    fold: int
    seed: Optional[int] = None
    best_stage: Optional[str] = None
    best_val_score: Optional[float] = None
    monitor: Optional[str] = None
    train_metrics: Optional[TrainMetrics] = None
    train_eval_accuracy: Optional[float] = None  # the kept model on its training images in eval mode, after training
    pretrained_tag: Optional[str] = None  # timm's tag of the weights the unit's backbone was built with
    drop_path: Optional[float] = None  # the stochastic-depth rate the backbone trained with (model.drop_path, resolved)
    layer_defaults: Optional[str] = None  # torch or keras: the BatchNorm constants and head init (model.layer_defaults)
    parameters: ParameterCounts = ParameterCounts()
    seconds: Optional[float] = None
    threads: Optional[int] = None  # torch threads the unit trained with (CPU float results depend on it)
    micro_batch: dict[str, int] = {}  # stage -> micro-batch, where out of GPU memory halved it (gradients accumulated)
    files: dict[str, str] = {}

    @classmethod
    def read(cls, path: Path, fix: str) -> "UnitInfo":
        raw = read_json(path, fix)
        try:
            return cls.model_validate(raw)
        except ValidationError as err:
            first = err.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            raise RunFileError(f"{path}: not a unit record (at {where}: {first['msg']}); {fix}") from None


class EnsembleRecord(_Open):
    """``ensemble.json``: an ensemble's members (unit or scenario names) and weights."""

    name: str
    kind: str
    scenario: Optional[str] = None
    weighting: str
    members: list[str]
    scores: list[Optional[float]] = []
    weights: list[float]
    note: str = ""
    champion_by: Optional[str] = None
    champion_metric: Optional[str] = None
    classes: list[str] = []
    n_test: Optional[int] = None
    files: dict[str, str] = {}


class SweepValue(_Open):
    """One value of a sweep step: its validation metric over folds and its units."""

    scenario: str
    settings: dict[str, Any]
    mean: Optional[float]
    sd: Optional[float] = None
    train_accuracy: Optional[float] = None
    values: list[Optional[float]] = []
    units: list[str] = []


class SweepStep(_Open):
    step: int
    keys: list[str]
    metric: str
    values: list[SweepValue]
    winner: dict[str, Any]
    winner_scenario: str


class SweepRecord(_Open):
    """``sweep.json``: the decided steps of a stepwise sweep."""

    metric: Optional[str] = None
    n_steps: Optional[int] = None
    steps: list[SweepStep] = []

    def decided(self, k: int) -> SweepStep | None:
        return next((s for s in self.steps if s.step == k), None)

    def with_step(self, step: SweepStep) -> "SweepRecord":
        steps = sorted([s for s in self.steps if s.step != step.step] + [step], key=lambda s: s.step)
        return self.model_copy(update={"steps": steps})
