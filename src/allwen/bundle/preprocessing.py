"""A member's preprocessing as one typed record, like timm's pretrained config: what the network was
trained to see (size, CLAHE, interpolation, mean/std).

Written once per unit at training (in the weights' safetensors metadata, key ``preprocessing``,
and as the unit's ``data_config.json``), copied unchanged into a bundle, read back by predict
and serve. No defaults here: every value comes from the run's config and the backbone
(:func:`Preprocessing.of`), so a default is written once, in :mod:`allwen.config.schema`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

INTERPOLATIONS = ("bilinear", "bicubic", "nearest")
MAX_SIDE = 4096  # a square input side above this is not a cell image model
#: the keys of bundle.json's ``members[].data`` (the run's data settings); the rest is ``data_config`` (timm's)
DATA_KEYS = ("image_size", "clahe", "clahe_clip", "clahe_grid")
NORM_KEYS = ("input_size", "interpolation", "mean", "std", "crop_pct", "crop_mode")


def _channels(value: tuple[float, float, float], what: str, positive: bool) -> tuple[float, float, float]:
    for v in value:
        if not math.isfinite(v) or (positive and not 0 < v <= 10) or (not positive and not -10 <= v <= 10):
            raise ValueError(f"{what} must be finite{' and > 0' if positive else ''} and at most 10 in size, "
                             f"not {list(value)}")
    return value


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ClaheOptions(_Strict):
    """CLAHE's options as the unit trained with them (``data.clahe``'s order, channel and background)."""

    order: Literal["before_resize", "after_resize"]
    channel: Literal["lab_lightness", "rgb"]
    background: Literal["keep_black", "equalise"]


class DataSteps(_Strict):
    """The run's data settings a member needs: bundle.json's ``members[].data``."""

    image_size: int | None = Field(..., gt=0, le=MAX_SIDE, description="square input side in pixels; null: native")
    clahe: bool | ClaheOptions = Field(..., description="false, true (the default options) or the options")
    clahe_clip: float = Field(..., gt=0, le=1000)
    clahe_grid: int = Field(..., ge=1, le=64)


class Normalisation(_Strict):
    """The backbone's pretrained config (timm's keys): bundle.json's ``members[].data_config``."""

    input_size: tuple[int, int, int] | None = None  # as the backbone reported it; not used to preprocess
    interpolation: Literal["bilinear", "bicubic", "nearest"]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    crop_pct: float | None = Field(None, gt=0, le=2)
    crop_mode: str | None = Field(None, max_length=32)

    @field_validator("mean")
    @classmethod
    def _mean(cls, value: tuple[float, float, float]) -> tuple[float, float, float]:
        return _channels(value, "mean", positive=False)

    @field_validator("std")
    @classmethod
    def _std(cls, value: tuple[float, float, float]) -> tuple[float, float, float]:
        return _channels(value, "std", positive=True)


class Preprocessing(DataSteps, Normalisation):
    """Input size (square side; None: the image's own), CLAHE, resize interpolation and normalisation."""

    @classmethod
    def of(cls, data: Any, norm: Mapping[str, Any]) -> Preprocessing:
        """From the run's data settings (a :class:`allwen.config.schema.DataConfig`) and the backbone's
        data config (:func:`allwen.models.backbone_data_config`)."""
        return cls(image_size=data.image_size, clahe=data.clahe_record(), clahe_clip=data.clahe_clip,
                   clahe_grid=data.clahe_grid,
                   **{k: norm[k] for k in NORM_KEYS if k in norm})

    @classmethod
    def join(cls, data: DataSteps, norm: Normalisation) -> Preprocessing:
        """From bundle.json's ``members[].data`` and ``members[].data_config``."""
        return cls(**data.model_dump(), **norm.model_dump(exclude_unset=True))

    @property
    def clahe_options(self) -> ClaheOptions | None:
        """CLAHE's options when it is on (``true``: the defaults of ``data.clahe``), else None."""
        if self.clahe is False:
            return None
        if self.clahe is True:
            return ClaheOptions(order="before_resize", channel="lab_lightness", background="keep_black")
        return self.clahe

    def data_steps(self) -> DataSteps:
        return DataSteps(**{k: getattr(self, k) for k in DATA_KEYS})

    def normalisation(self) -> Normalisation:
        return Normalisation(**{k: getattr(self, k) for k in NORM_KEYS if k in self.model_fields_set})

    def metadata(self) -> dict[str, Any]:
        """The record as JSON data (safetensors metadata, ``data_config.json``)."""
        return self.model_dump(mode="json", exclude_unset=True)


__all__ = ["ClaheOptions", "DATA_KEYS", "DataSteps", "INTERPOLATIONS", "MAX_SIDE", "NORM_KEYS", "Normalisation", "Preprocessing"]
