"""``bundle.json`` as one typed, validated model: a bundle that would answer nonsense is refused whole.

Every section, the members, calibration, referral (``selective``), prediction sets
(``conformal``), the OOD detector (``ood``), the patient call (``patient``) and the model card,
is a strict record (``extra="forbid"``): a hand-edited or damaged manifest (temperature -1,
a NaN or negative member weight, weights summing to 10, a dropped member, an unknown key, a
threshold outside [0, 1]) is refused at load with one line naming the file, the field and the
fix (:func:`parse_manifest`). Imports neither torch nor timm (the ONNX path runs without them).
"""

from __future__ import annotations

import json
import math
from pathlib import Path, PurePosixPath
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from allwen.bundle.layout import BUNDLE_FILE, MEMBER_FILES
from allwen.bundle.preprocessing import DataSteps, Normalisation, Preprocessing

FORMAT = "allwen-bundle"
FORMAT_VERSION = 1
WEIGHT_SUM_TOLERANCE = 1e-6
FIX = "re-export the bundle with `allwen export`, or copy the original bundle folder again"
MAX_MANIFEST_BYTES = 16 * 1024 * 1024  # a bundle.json is a few kB; anything near this is not one
MAX_JSON_DEPTH = 32
OOD_METHODS = ("mahalanobis", "knn")  # allwen.evaluation.ood.OOD_METHODS (a test keeps them equal)
Probabilities = Literal["calibrated", "raw"]


class Record(BaseModel):
    """A strict part of the manifest: an unknown key is an error, not a silent extra."""

    model_config = ConfigDict(extra="forbid")


def _finite(value: float, what: str) -> float:
    if not math.isfinite(value):
        raise ValueError(f"{what} must be a finite number, not {value}")
    return value


def _unit_interval(value: float | None, what: str) -> float | None:
    if value is not None and not (math.isfinite(value) and 0.0 <= value <= 1.0):
        raise ValueError(f"{what} must be a number in [0, 1] or null, not {value}")
    return value


def _inside(rel: str, what: str) -> str:
    path = PurePosixPath(rel)
    if not rel or path.is_absolute() or ".." in path.parts or "\\" in rel:
        raise ValueError(f"{what} {rel!r} must be a relative path inside the bundle")
    return rel


# --------------------------------------------------------------------------- members and calibration


class MemberSpec(Record):
    name: str = Field(..., min_length=1, max_length=500)
    weight: float
    folder: str = Field(..., min_length=1, max_length=500)
    backbone: str = Field(..., min_length=1, max_length=200)
    head: str = Field(..., min_length=1, max_length=100)
    pretrained_tag: str | None = None
    activation: str = Field(..., min_length=1, max_length=100)
    dropout: float = Field(..., ge=0, lt=1)
    #: Keras's layer constants (a head's BatchNorm epsilon changes its output) and the stochastic depth trained with
    layer_defaults: Literal["torch", "keras"] = "torch"
    drop_path: float | None = Field(None, ge=0, lt=1)
    best_stage: str | None = None
    data: DataSteps
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
    def _folder(cls, value: str) -> str:
        return _inside(value, "folder")

    @property
    def preprocessing(self) -> Preprocessing:
        return Preprocessing.join(self.data, self.data_config)

    @property
    def image_size(self) -> int | None:
        return self.data.image_size


class CalibrationFacts(Record):
    ece_before: float
    ece_after: float
    nll_before: float
    nll_after: float


class CalibrationSpec(Record):
    method: Literal["temperature"]
    temperature: float
    applied_to: str | None = None
    fitted_on: str | None = None
    n_fit: int | None = Field(None, ge=0)
    validation: CalibrationFacts | None = None
    test: CalibrationFacts | None = None
    default: Probabilities = Field(
        "calibrated", description="what predict uses unless told: raw when calibration made test ECE worse")

    @field_validator("temperature")
    @classmethod
    def _temperature(cls, value: float) -> float:
        _finite(value, "temperature")
        if value <= 0:
            raise ValueError(f"temperature must be > 0, not {value}")
        return value


# --------------------------------------------------------------------------- when not to answer (issue 21)


class SelectiveValidation(Record):
    n: int = Field(..., ge=0)
    n_accepted: int = Field(..., ge=0)
    coverage: float = Field(..., ge=0, le=1)
    accuracy: float | None = Field(None, ge=0, le=1)


class Selective(Record):
    target_accuracy: float = Field(..., gt=0, le=1)
    threshold: float | None
    achieved: bool
    score: str | None = None
    probabilities: Probabilities = "calibrated"
    fitted_on: str | None = None
    validation: SelectiveValidation | None = None

    @field_validator("threshold")
    @classmethod
    def _t(cls, v: float | None) -> float | None:
        return _unit_interval(v, "threshold")


class ConformalLevel(Record):
    level: float = Field(..., gt=0, lt=1)
    column: str = Field(..., pattern=r"^set_[0-9.]+$", max_length=32)
    mondrian: bool
    nonempty: bool = False
    threshold: dict[str, float | None]
    n_calibration: list[int] | None = None
    n_clusters: list[int] | None = None  # calibration subjects (or pseudo-patients) per class

    @field_validator("threshold")
    @classmethod
    def _t(cls, v: dict[str, float | None]) -> dict[str, float | None]:
        for name, t in v.items():
            _unit_interval(t, f"threshold of class {name!r}")
        return v


class WithheldLevel(Record):
    """A level the calibration data cannot support: the bundle gives no set there, and says why."""

    level: float = Field(..., gt=0, lt=1)
    reason: str = Field(..., max_length=2000)
    clusters: dict[str, int] | None = None


class Conformal(Record):
    method: str | None = None
    library: str | None = None
    probabilities: Probabilities = "calibrated"
    fitted_on: str | None = None
    levels: list[ConformalLevel] = Field(..., max_length=20)  # empty: every level withheld
    withheld: list[WithheldLevel] = Field(default_factory=list, max_length=20)


class FeaturesOnnx(Record):
    file: str = Field(..., pattern=r"^[A-Za-z0-9._-]+$")
    max_rel_diff_vs_torch: float


class OOD(Record):
    method: Literal["mahalanobis", "knn"]
    member: str | None = None
    member_index: int = Field(..., ge=0)
    file: str = Field(..., pattern=r"^[A-Za-z0-9._-]+$")
    features: str | None = None
    input_statistics: str | None = None
    feature_dim: int = Field(..., gt=0, le=1_000_000)
    n_fit: int | None = Field(None, ge=0)
    quantile: float = Field(..., gt=0, lt=1)
    threshold: float = Field(..., ge=0)
    n_validation: int | None = Field(None, ge=0)
    fitted_on: str | None = None
    features_onnx: FeaturesOnnx | None = None

    @field_validator("threshold")
    @classmethod
    def _f(cls, v: float) -> float:
        if not math.isfinite(v):
            raise ValueError(f"threshold must be finite, not {v}")
        return v


class Patient(Record):
    positive_classes: list[str] | None
    threshold: float | None
    statistic: str | None = None
    source: str | None = None
    n_subjects: int | None = Field(None, ge=0)
    balanced_accuracy: float | None = None
    note: str | None = None

    @field_validator("threshold")
    @classmethod
    def _t(cls, v: float | None) -> float | None:
        return _unit_interval(v, "threshold")


SECTIONS = ("selective", "conformal", "ood", "patient")


# --------------------------------------------------------------------------- card, input, ONNX


class Card(Record):
    """The model card's facts (rendered to MODEL_CARD.md; the evidence sections as export computed them)."""

    run: str
    intended_use: str
    limits: list[str]
    data: dict[str, Any]
    split: dict[str, Any]
    test: dict[str, Any] | None = None
    selective: dict[str, Any] | None = None
    conformal: list[dict[str, Any]] | None = None
    ood: dict[str, Any] | None = None


class InputSpec(Record):
    description: str
    color: Literal["RGB"]
    image_size: int | list[int] | None
    tensor: str
    output: str


class OnnxInfo(Record):
    opset: int = Field(..., ge=1)
    input: str
    output: str
    max_abs_diff_vs_torch: float


# --------------------------------------------------------------------------- the manifest


class Manifest(Record):
    """The whole ``bundle.json``; cross-field rules in :meth:`_consistent`."""

    format: Literal["allwen-bundle"]
    format_version: int = Field(..., ge=1)
    name: str = Field(..., min_length=1, max_length=500)
    kind: Literal["unit", "ensemble"]
    weighting: str = Field(..., description="the ensemble's weighting (config.choices.WEIGHTING_NAMES); single: a unit")
    chosen_as: str | None = None
    classes: list[str] = Field(..., min_length=2, max_length=1000)
    descriptions: dict[str, str] = Field(default_factory=dict, description="class name -> what it means")
    members: list[MemberSpec] = Field(..., min_length=1, max_length=1000)
    calibration: CalibrationSpec
    card: Card
    input: InputSpec
    versions: dict[str, str]
    created: str
    formats: list[Literal["safetensors", "onnx"]] = ["safetensors"]
    onnx: OnnxInfo | None = None
    selective: Selective | None = None
    conformal: Conformal | None = None
    ood: OOD | None = None
    patient: Patient | None = None
    files: dict[str, str] = Field(..., min_length=1)

    @field_validator("classes")
    @classmethod
    def _classes(cls, value: list[str]) -> list[str]:
        if len(set(value)) != len(value) or not all(value):
            raise ValueError(f"classes must be distinct non-empty names, not {value}")
        return value

    @field_validator("weighting")
    @classmethod
    def _weighting(cls, value: str) -> str:
        from allwen.config.choices import WEIGHTING_NAMES

        if value not in (*WEIGHTING_NAMES, "single"):
            raise ValueError(f"weighting {value!r}: choose from {', '.join((*WEIGHTING_NAMES, 'single'))}")
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
        problem = self._section_problem()
        if problem:
            raise ValueError(problem)
        return self

    def _section_problem(self) -> str | None:
        """Cross-field rules of the sections: thresholds name exactly the classes, set columns differ,
        the OOD member exists and its files are hashed, the patient's positive classes are classes."""
        if self.conformal is not None:
            columns = [lv.column for lv in self.conformal.levels]
            bad = next((lv for lv in self.conformal.levels if sorted(lv.threshold) != sorted(self.classes)), None)
            if bad is not None:
                return f"conformal level {bad.level}: thresholds for {sorted(bad.threshold)}, the classes are {self.classes}"
            if len(set(columns)) != len(columns):
                return f"conformal.levels: columns repeat ({columns})"
        if self.ood is not None:
            if self.ood.member_index >= len(self.members):
                return f"ood.member_index {self.ood.member_index}: the bundle has {len(self.members)} members"
            if self.ood.file not in self.files:
                return f"ood.file {self.ood.file!r} is not listed in files (not hashed)"
            onnx = self.ood.features_onnx
            if onnx is not None and f"{self.members[self.ood.member_index].folder}/{onnx.file}" not in self.files:
                return f"ood.features_onnx.file {onnx.file!r} is not listed in files (not hashed)"
        if self.patient is not None and self.patient.positive_classes is not None:
            unknown = [c for c in self.patient.positive_classes if c not in self.classes]
            if unknown:
                return f"patient.positive_classes {unknown} are not bundle classes {self.classes}"
        return None

    def as_json(self) -> dict[str, Any]:
        """The manifest as it is written (fields never given stay out, as they were)."""
        return self.model_dump(mode="json", exclude_unset=True)

    def section_json(self, name: str) -> Any:
        value = getattr(self, name)
        return value.model_dump(mode="json", exclude_unset=True) if isinstance(value, BaseModel) else value

    @property
    def calibrate_by_default(self) -> bool:
        return self.calibration.default == "calibrated"


# --------------------------------------------------------------------------- reading


def _first_error(exc: ValidationError) -> str:
    err = exc.errors()[0]
    loc = ".".join(str(p) for p in err["loc"])
    msg = str(err["msg"]).removeprefix("Value error, ")
    return f"{loc}: {msg}" if loc else msg


def _depth(value: Any) -> int:
    """Nesting depth of decoded JSON, without recursion."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, depth = stack.pop()
        deepest = max(deepest, depth)
        if isinstance(item, dict):
            stack.extend((v, depth + 1) for v in item.values())
        elif isinstance(item, list):
            stack.extend((v, depth + 1) for v in item)
    return deepest


def manifest_from_bytes(data: bytes, where: Path | str) -> Manifest:
    """Decode and validate a manifest; ValueError with one line naming ``where`` and the field."""
    if len(data) > MAX_MANIFEST_BYTES:
        raise ValueError(f"{where}: {len(data):,} bytes, more than a bundle manifest can be "
                         f"({MAX_MANIFEST_BYTES:,}); {FIX}")
    try:
        raw = json.loads(data)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise ValueError(f"{where}: not valid JSON ({' '.join(str(exc).split())[:200]}); {FIX}") from None
    if not isinstance(raw, dict) or raw.get("format") != FORMAT:
        raise ValueError(f"{where}: not an allwen bundle manifest (format {FORMAT!r} expected)")
    if _depth(raw) > MAX_JSON_DEPTH:
        raise ValueError(f"{where}: nested deeper than {MAX_JSON_DEPTH} levels; {FIX}")
    version = raw.get("format_version")
    if isinstance(version, int) and version > FORMAT_VERSION:
        from allwen import __version__

        raise ValueError(f"{where}: bundle format {version} is newer than this allwen ({__version__}) reads; upgrade allwen")
    try:
        return Manifest.model_validate(raw)
    except ValidationError as exc:
        raise ValueError(f"{where}: field {_first_error(exc)}; {FIX}") from None


def read_manifest_bytes(path: Path) -> bytes:
    """``bundle.json``'s bytes, refusing a file too large to be one before reading it."""
    try:
        size = path.stat().st_size
        if size > MAX_MANIFEST_BYTES:
            raise ValueError(f"{path}: {size:,} bytes, more than a bundle manifest can be ({MAX_MANIFEST_BYTES:,}); {FIX}")
        return path.read_bytes()
    except OSError as exc:
        raise ValueError(f"{path}: cannot be read ({exc.strerror or exc}); {FIX}") from None


def parse_manifest(path: Path) -> Manifest:
    """Read and validate ``bundle.json`` (a folder: its ``bundle.json``)."""
    path = Path(path)
    if path.is_dir():
        path = path / BUNDLE_FILE
    return manifest_from_bytes(read_manifest_bytes(path), path)


__all__ = ["Card", "CalibrationSpec", "Conformal", "ConformalLevel", "FIX", "FORMAT", "FORMAT_VERSION", "InputSpec",
           "Manifest", "MemberSpec", "OOD", "OOD_METHODS", "OnnxInfo", "Patient", "SECTIONS", "Selective",
           "manifest_from_bytes", "parse_manifest", "read_manifest_bytes"]
