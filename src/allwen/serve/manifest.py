"""``bundle.json`` as a typed, validated model: a bundle that would answer nonsense is refused.

A hand-edited or damaged manifest (temperature -1, a NaN or negative member weight, weights
summing to 10, a dropped member, a missing key) used to reach prediction and give flipped
classes or probabilities outside [0, 1]. Reading it through :class:`Manifest` checks every
value once, at load time, and :func:`parse_manifest` turns the first problem into one line
naming the file, the field and the fix. Imports neither torch nor timm (the ONNX path runs
without them). Sections added by later features (``selective``, ``conformal``, ``ood``) are
kept as they are (``extra="allow"``) and get their own checks where they are defined.
"""

from __future__ import annotations

import json
import math
import struct
from pathlib import Path, PurePosixPath
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

FORMAT = "allwen-bundle"
FORMAT_VERSION = 1
MEMBER_FILES = ("weights.safetensors", "data_config.json")
WEIGHT_SUM_TOLERANCE = 1e-6
FIX = "re-export the bundle with `allwen export`, or copy the original bundle folder again"


class _Open(BaseModel):
    model_config = ConfigDict(extra="allow")


def _finite(value: float, what: str) -> float:
    if not math.isfinite(value):
        raise ValueError(f"{what} must be a finite number, not {value}")
    return value


class MemberData(_Open):
    """The member's preprocessing (what :class:`allwen.config.schema.DataConfig` it was trained with)."""

    image_size: int | None = Field(..., gt=0, description="square input side in pixels; null: native size")
    clahe: bool | dict[str, str] = False  # or data.clahe's options (order, channel, background)
    clahe_clip: float = Field(2.0, gt=0)
    clahe_grid: int = Field(8, gt=0)


class Normalisation(_Open):
    """The backbone's pretrained normalisation (timm's data config)."""

    mean: list[float] = Field(..., min_length=3, max_length=3)
    std: list[float] = Field(..., min_length=3, max_length=3)
    interpolation: str = "bilinear"

    @field_validator("std")
    @classmethod
    def _positive(cls, value: list[float]) -> list[float]:
        if not all(math.isfinite(v) and v > 0 for v in value):
            raise ValueError(f"std must be finite and > 0, not {value}")
        return value


class MemberSpec(_Open):
    name: str = Field(..., min_length=1)
    weight: float
    folder: str = Field(..., min_length=1)
    backbone: str = Field(..., min_length=1)
    head: str = Field(..., min_length=1)
    activation: str = "native"
    dropout: float = Field(0.0, ge=0, lt=1)
    best_stage: str | None = None
    data: MemberData
    data_config: Normalisation
    classes: list[str] | None = None

    @field_validator("weight")
    @classmethod
    def _weight(cls, value: float) -> float:
        _finite(value, "weight")
        if value < 0:
            raise ValueError(f"weight must be >= 0, not {value}")
        return value

    @field_validator("folder")
    @classmethod
    def _inside(cls, value: str) -> str:
        path = PurePosixPath(value)
        if path.is_absolute() or ".." in path.parts:
            raise ValueError(f"folder {value!r} must be a relative path inside the bundle")
        return value


class CalibrationSpec(_Open):
    method: Literal["temperature"]
    temperature: float
    default: Literal["calibrated", "raw"] = Field(
        "calibrated", description="what predict uses unless told: raw when calibration made test ECE worse")

    @field_validator("temperature")
    @classmethod
    def _temperature(cls, value: float) -> float:
        _finite(value, "temperature")
        if value <= 0:
            raise ValueError(f"temperature must be > 0, not {value}")
        return value


class Manifest(_Open):
    """The whole ``bundle.json``; cross-field rules in :meth:`_consistent`."""

    format: Literal["allwen-bundle"]
    format_version: int = Field(..., ge=1)
    name: str = Field(..., min_length=1)
    kind: Literal["unit", "ensemble"]
    weighting: str = Field(..., min_length=1)
    chosen_as: str | None = None
    classes: list[str] = Field(..., min_length=2)
    descriptions: dict[str, str] = Field(default_factory=dict, description="class name -> what it means")
    members: list[MemberSpec] = Field(..., min_length=1)
    calibration: CalibrationSpec
    card: dict[str, Any]
    input: dict[str, Any]
    versions: dict[str, str]
    created: str
    formats: list[str] = ["safetensors"]
    onnx: dict[str, Any] | None = None
    files: dict[str, str] = Field(..., min_length=1)

    @field_validator("classes")
    @classmethod
    def _classes(cls, value: list[str]) -> list[str]:
        if len(set(value)) != len(value) or not all(value):
            raise ValueError(f"classes must be distinct non-empty names, not {value}")
        return value

    @field_validator("files")
    @classmethod
    def _hashes(cls, value: dict[str, str]) -> dict[str, str]:
        for rel, digest in value.items():
            path = PurePosixPath(rel)
            if path.is_absolute() or ".." in path.parts:
                raise ValueError(f"file {rel!r} points outside the bundle")
            if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
                raise ValueError(f"{rel}: {digest!r} is not a sha256 hex digest")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> Manifest:
        total = sum(m.weight for m in self.members)
        if abs(total - 1.0) > WEIGHT_SUM_TOLERANCE:
            raise ValueError(f"members' weights sum to {total:g}, not 1 "
                             f"({', '.join(f'{m.name}: {m.weight:g}' for m in self.members)})")
        if self.kind == "unit" and len(self.members) != 1:
            raise ValueError(f"kind 'unit' needs exactly one member, not {len(self.members)}")
        names = [m.name for m in self.members]
        if len(set(names)) != len(names):
            raise ValueError(f"member names repeat: {names}")
        for i, member in enumerate(self.members):
            if member.classes is not None and member.classes != self.classes:
                raise ValueError(f"members.{i}.classes {member.classes} differ from classes {self.classes}")
            for file in MEMBER_FILES:
                if f"{member.folder}/{file}" not in self.files:
                    raise ValueError(f"members.{i}: {member.folder}/{file} is not listed in files (not hashed)")
        unknown = set(self.descriptions) - set(self.classes)
        if unknown:
            raise ValueError(f"descriptions name classes the bundle does not have: {sorted(unknown)}")
        return self


def _first_error(exc: ValidationError) -> str:
    err = exc.errors()[0]
    loc = ".".join(str(p) for p in err["loc"])
    msg = str(err["msg"]).removeprefix("Value error, ")
    return f"{loc}: {msg}" if loc else msg


def parse_manifest(path: Path) -> Manifest:
    """Read and validate ``bundle.json``; ValueError with one line naming the file and field."""
    try:
        raw = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path}: not valid JSON ({exc}); {FIX}") from None
    if not isinstance(raw, dict) or raw.get("format") != FORMAT:
        raise ValueError(f"{path}: not an allwen bundle manifest (format {FORMAT!r} expected)")
    version = raw.get("format_version")
    if isinstance(version, int) and version > FORMAT_VERSION:
        from allwen import __version__

        raise ValueError(f"{path}: bundle format {version} is newer than this allwen ({__version__}) reads; upgrade allwen")
    try:
        return Manifest.model_validate(raw)
    except ValidationError as exc:
        raise ValueError(f"{path}: field {_first_error(exc)}; {FIX}") from None


def safetensors_metadata(path: Path) -> dict[str, Any]:
    """The JSON-decoded metadata of a safetensors file, read from its header with no framework."""
    try:
        with open(path, "rb") as handle:
            (length,) = struct.unpack("<Q", handle.read(8))
            if length > 100_000_000:
                raise ValueError("header too large")
            header = json.loads(handle.read(length))
    except (OSError, ValueError, struct.error) as exc:
        raise ValueError(f"{path}: not a valid safetensors file ({exc}); {FIX}") from None
    out: dict[str, Any] = {}
    for key, value in (header.get("__metadata__") or {}).items():
        try:
            out[key] = json.loads(value)
        except ValueError:
            out[key] = value
    return out


def check_member_metadata(root: Path, manifest: Manifest) -> None:
    """Each member's weights file was saved for the classes, backbone and head bundle.json names."""
    for i, member in enumerate(manifest.members):
        path = root / member.folder / "weights.safetensors"
        meta = safetensors_metadata(path)
        expected = {"classes": manifest.classes, "backbone": member.backbone, "head": member.head}
        for key, want in expected.items():
            if key in meta and meta[key] != want:
                field = "classes" if key == "classes" else f"members.{i}.{key}"
                raise ValueError(f"{path}: saved for {key} {meta[key]!r}, but bundle.json field {field} says {want!r}; "
                                 f"{FIX}")
