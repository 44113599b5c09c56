"""A model bundle: one self-contained folder that predicts without the run it came from.

```
BUNDLE/bundle.json      classes, members (architecture, preprocessing, weight), ensemble
                        weighting, calibration, model card, versions, input format, and the
                        sha256 of every other file
BUNDLE/MODEL_CARD.md    the model card for people; BUNDLE/reliability.png its calibration plot
BUNDLE/members/<name>/  weights.safetensors, data_config.json (and model.onnx with --format onnx)
```

Loading reads JSON and safetensors only (nothing is unpickled) and checks every file's hash
first, so a bundle that was changed or damaged after export is refused, naming the file.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import platform
import shutil
import tempfile
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from allwen import __version__
from allwen.io import atomic_write_json, atomic_write_text
from allwen.serve.manifest import FIX, FORMAT, FORMAT_VERSION, MEMBER_FILES, Manifest, check_member_metadata, parse_manifest
from allwen.serve.predict import RUNTIMES, Member, device_type, predict_table

if TYPE_CHECKING:
    from allwen.serve.choice import ModelChoice

log = logging.getLogger(__name__)

BUNDLE_FILE = "bundle.json"
FORMATS = ("safetensors", "onnx")
LOAD_RUNTIMES = ("auto", *RUNTIMES)
INPUT_DESCRIPTION = (
    "one image file per cell (BMP, PNG, JPEG, TIFF; read by content, converted to RGB); each member resizes "
    "and normalises it with its own saved settings"
)
__all__ = ["BUNDLE_FILE", "FORMAT", "FORMAT_VERSION", "Bundle", "export_bundle", "load_bundle", "sha256_file"]


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _member_folder(index: int, name: str) -> str:
    from allwen.runfolder import safe_name

    return f"members/{index:02d}_{safe_name(name)}"


@dataclass
class Bundle:
    """A loaded, validated bundle; :meth:`predict` applies it (see :func:`allwen.serve.predict.predict_table`).

    ``runtime`` (``torch`` or ``onnx``) and ``device`` are what :func:`load_bundle` chose and
    built every network for; predictions use them unless told otherwise.
    """

    root: Path
    manifest: dict[str, Any]
    members: list[Member]
    ensemble: Any = field(repr=False)
    spec: Manifest | None = field(default=None, repr=False)
    runtime: str = "torch"
    device: str = "auto"
    _abstainer: Any = field(default=None, repr=False)

    @property
    def abstainer(self):
        """The bundle's referral, conformal, OOD and patient sections (:mod:`allwen.serve.abstain`); None without."""
        if self._abstainer is None and any(self.manifest.get(k) for k in ("selective", "conformal", "ood")):
            from allwen.serve.abstain import Abstainer

            self._abstainer = Abstainer(self.manifest, self.root)
        return self._abstainer

    @property
    def name(self) -> str:
        return str(self.manifest["name"])

    @property
    def classes(self) -> list[str]:
        return list(self.manifest["classes"])

    @property
    def temperature(self) -> float:
        return float(self.manifest["calibration"]["temperature"])

    @property
    def calibrate_by_default(self) -> bool:
        """False when export found that calibration made the test ECE worse: raw probabilities then."""
        return self.manifest["calibration"].get("default", "calibrated") == "calibrated"

    @property
    def descriptions(self) -> dict[str, str]:
        return dict(self.manifest.get("descriptions") or {})

    @property
    def input_sizes(self) -> list[int]:
        """The square input sides the members were trained at (empty: native size)."""
        return sorted({m.image_size for m in self.members if m.image_size})

    @property
    def card(self) -> dict[str, Any]:
        """The model card as JSON (``GET /api/model``)."""
        keys = ("name", "kind", "weighting", "classes", "descriptions", "calibration", "card", "versions", "input",
                "created", "selective", "conformal", "ood", "patient")
        members = [{k: m[k] for k in ("name", "weight", "backbone", "head", "data")} for m in self.manifest["members"]]
        return {**{k: self.manifest.get(k) for k in keys}, "members": members, "runtime": self.runtime,
                "input_sizes": self.input_sizes}

    def build(self) -> Bundle:
        """Build every member's network in the chosen runtime now; errors name the member's file."""
        for member in self.members:
            member.build(self.runtime, self.device)
        return self

    def predict(self, inputs: Any, **options: Any):
        """Predict files, folders, globs, PIL images or uint8 arrays; a DataFrame, one row per image.

        Options: ``tta``, ``calibrate`` (default: the bundle's, see :attr:`calibrate_by_default`),
        ``runtime`` (``torch``/``onnx``, default the loaded one), ``device``, ``batch_size``,
        ``explain_dir``, ``max_bytes``, ``max_pixels``, ``progress``.
        """
        if isinstance(inputs, (str, Path)) or not hasattr(inputs, "__len__") or hasattr(inputs, "shape"):
            inputs = [inputs]
        return predict_table(self, list(inputs), **options)


# --------------------------------------------------------------------------- loading


def _verify(root: Path, manifest: Manifest) -> None:
    """Every listed file is inside the bundle, present, and has the recorded sha256."""
    base = root.resolve()
    for rel, expected in manifest.files.items():
        path = (root / rel).resolve()
        if base not in path.parents:
            raise ValueError(f"{root / BUNDLE_FILE}: field files: {rel!r} points outside the bundle; {FIX}")
        if not path.is_file():
            raise ValueError(f"{root / rel}: missing from the bundle (listed in bundle.json field files); copy the "
                             "whole bundle folder again")
        if sha256_file(path) != expected:
            raise ValueError(f"{root / rel}: sha256 differs from bundle.json field files; the file was changed or "
                             "damaged after export, so it is refused; copy the bundle again or re-export it")


def fitted_ensemble(weighting: str, names: list[str], weights: list[float], n_classes: int):
    """A :class:`WeightedEnsemble` with the saved weights, combining exactly as the run did."""
    from allwen.ensemble.wen import WeightedEnsemble

    ens = WeightedEnsemble(weighting="vote" if weighting == "vote" else "uniform")
    ens.names_, ens.weights_ = list(names), np.asarray(weights, dtype=float)
    ens.scores_, ens.note_ = np.asarray(weights, dtype=float), ""
    ens.n_members_, ens.n_classes_ = len(names), n_classes
    return ens


def has_onnx(root: Path, spec: Manifest) -> bool:
    from allwen.serve.onnx_runtime import ONNX_FILE

    return "onnx" in spec.formats and all(f"{m.folder}/{ONNX_FILE}" in spec.files for m in spec.members)


def choose_runtime(root: Path, spec: Manifest, runtime: str, device: str) -> str:
    """``auto``: ONNX Runtime on the CPU when the bundle has ONNX members and onnxruntime is installed,
    else PyTorch (on a GPU, or for bundles exported without ONNX)."""
    if runtime not in LOAD_RUNTIMES:
        raise ValueError(f"--runtime {runtime!r}: choose from {', '.join(LOAD_RUNTIMES)}")
    if runtime == "onnx" and not has_onnx(root, spec):
        raise ValueError(f"{root}: this bundle has no ONNX members; re-export it with `allwen export` (ONNX is the "
                         "default) or use --runtime torch")
    if runtime != "auto":
        return runtime
    if has_onnx(root, spec) and device_type(device) == "cpu":
        import importlib.util

        if importlib.util.find_spec("onnxruntime") is not None:
            return "onnx"
    return "torch"


def load_bundle(path: str | os.PathLike[str], runtime: str = "auto", device: str = "auto",
                build: bool = True) -> Bundle:
    """Open an exported bundle: validate ``bundle.json``, check every file's sha256 and each weights
    file's metadata, choose the runtime and (``build``) build every network now.

    Any problem is a ValueError of one line naming the file and the field. With
    ``runtime="onnx"`` (or ``auto`` on a CPU with an ONNX bundle) neither torch nor timm is imported.
    """
    root = Path(path)
    manifest_path = root / BUNDLE_FILE
    if not manifest_path.is_file():
        raise ValueError(f"{root}: not an allwen bundle (no {BUNDLE_FILE}); make one with `allwen export RUN --out {root}`")
    spec = parse_manifest(manifest_path)
    _verify(root, spec)
    check_member_metadata(root, spec)
    raw = json.loads(manifest_path.read_text())
    from allwen.serve.abstain import validate_sections

    validate_sections(raw, str(manifest_path))
    classes = list(spec.classes)
    members = [Member(m.name, float(m.weight), root / m.folder, m.model_dump(), classes) for m in spec.members]
    ensemble = fitted_ensemble(spec.weighting, [m.name for m in members], [m.weight for m in members], len(classes))
    chosen = choose_runtime(root, spec, runtime, device)
    bundle = Bundle(root, raw, members, ensemble, spec=spec, runtime=chosen, device=device)
    if chosen == "torch":
        _warn_versions(spec.versions)
    return bundle.build() if build else bundle


def _warn_versions(versions: dict[str, str]) -> None:
    import timm
    import torch

    for name, now in (("timm", timm.__version__), ("torch", torch.__version__)):
        then = str(versions.get(name, ""))
        if then and then.split(".")[:2] != now.split(".")[:2]:
            log.warning("bundle made with %s %s, this is %s %s: check predictions on known images", name, then, name, now)


# --------------------------------------------------------------------------- export


def _clahe(value: Any) -> bool | dict[str, Any]:
    """CLAHE as the member was trained: off, on with the defaults, or its options (data.clahe.order ...)."""
    return dict(value) if isinstance(value, dict) else bool(value)


def _member_spec(run_dir: Path, name: str, weight: float, folder: str) -> dict[str, Any]:
    from allwen.models import read_metadata
    from allwen.runfolder import UnitFolder
    from allwen.serve.choice import unit_config, unit_dir

    unit = UnitFolder(unit_dir(run_dir, name))
    meta = read_metadata(unit.weights)
    cfg = unit_config(run_dir, name)
    data, model = cfg.get("data") or {}, cfg.get("model") or {}
    norm = json.loads(unit.data_config.read_text())
    norm = {k: v for k, v in norm.items() if k not in ("image_size", "classes")}
    return {
        "name": name, "weight": float(weight), "folder": folder,
        "backbone": meta.get("backbone") or model["backbone"], "head": meta.get("head") or model["head"],
        "pretrained_tag": meta.get("pretrained_tag") or model.get("pretrained_tag"),
        "activation": meta.get("activation") or model.get("activation", "native"),
        "dropout": float(model.get("dropout", 0.0)), "best_stage": meta.get("best_stage"),
        "layer_defaults": meta.get("layer_defaults") or "torch", "drop_path": meta.get("drop_path"),  # issue 28
        "data": {
            "image_size": meta.get("image_size", data.get("image_size")), "clahe": _clahe(meta.get("clahe", data.get("clahe", False))),
            "clahe_clip": float(data.get("clahe_clip", 2.0)), "clahe_grid": int(data.get("clahe_grid", 8)),
        },
        "data_config": meta.get("data_config") or norm,
        "classes": meta.get("classes"),
    }


def _check_out(out: Path) -> None:
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ValueError(f"{out} already exists; bundles are never overwritten: choose a new --out")


def default_format() -> str:
    """``onnx`` (safetensors plus ONNX members, so predict and serve run without torch on a CPU)
    when onnx and onnxruntime are installed, else ``safetensors``."""
    import importlib.util

    if all(importlib.util.find_spec(m) is not None for m in ("onnx", "onnxruntime")):
        return "onnx"
    log.warning("onnx/onnxruntime not installed (pip install 'allwen[serve]'): exporting without ONNX members")
    return "safetensors"


def export_bundle(run_dir: str | os.PathLike[str], out: str | os.PathLike[str], model: str | None = None,
                  fmt: str | None = None, abstain: Any = None) -> Path:
    """Write the bundle of ``model`` (default: the run's recorded ``default_export``) to ``out``.

    ``fmt``: ``onnx`` (the default when installed: ONNX members beside the safetensors weights)
    or ``safetensors``. Built in a temporary folder beside ``out`` and renamed into place, so an
    interrupted export leaves no half bundle under the real name.
    """
    from allwen.serve.choice import member_predictions, resolve_model

    run_dir, out = Path(run_dir), Path(out)
    fmt = fmt or default_format()
    if fmt not in FORMATS:
        raise ValueError(f"--format {fmt!r}: choose from {', '.join(FORMATS)}")
    _check_out(out)
    choice = resolve_model(run_dir, model)
    preds = member_predictions(run_dir, choice.members)
    classes = preds[0].classes
    for p in preds:
        if p.classes != classes:
            raise ValueError(f"units {preds[0].name} and {p.name} have different classes")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        manifest = _write_contents(run_dir, tmp, choice, preds, classes, fmt, abstain)
        manifest["files"] = {
            p.relative_to(tmp).as_posix(): sha256_file(p) for p in sorted(tmp.rglob("*")) if p.is_file()
        }
        atomic_write_json(tmp / BUNDLE_FILE, manifest)
        parse_manifest(tmp / BUNDLE_FILE)  # what we write must be what we accept
        _check_out(out)
        if out.exists():
            out.rmdir()
        os.replace(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    log.info("bundle %s (%s) written to %s", choice.name, choice.kind, out)
    return out


def _write_contents(run_dir: Path, root: Path, choice: ModelChoice, preds: list, classes: list[str],
                    fmt: str, abstain: Any = None) -> dict[str, Any]:
    import timm
    import torch

    from allwen.serve import calibration
    from allwen.serve.card import (INTENDED_USE, LIMITS, calibration_facts, class_descriptions, data_and_split,
                                   render_markdown, test_metrics)
    from allwen.evaluation.results import load_summary
    from allwen.serve.choice import unit_dir

    members = []
    for i, (name, weight) in enumerate(zip(choice.members, choice.weights)):
        folder = _member_folder(i, name)
        (root / folder).mkdir(parents=True)
        for file in MEMBER_FILES:
            shutil.copy2(unit_dir(run_dir, name) / file, root / folder / file)
        members.append(_member_spec(run_dir, name, weight, folder))
    ensemble = fitted_ensemble(choice.weighting, choice.members, choice.weights, len(classes))

    # calibration: one temperature over the out-of-fold validation predictions of the members that count
    fit = [p for p, w in zip(preds, choice.weights) if w > 0] or preds
    val_proba = np.concatenate([p.val_proba for p in fit])
    val_y = np.concatenate([p.val_y for p in fit])
    temperature = calibration.fit_temperature(val_proba, val_y)
    cal: dict[str, Any] = {
        "method": "temperature", "temperature": temperature, "applied_to": "each member's probabilities",
        "fitted_on": "members' out-of-fold validation predictions (predictions_val.csv)", "n_fit": int(len(val_y)),
        "validation": calibration_facts(val_y, val_proba, calibration.apply_temperature(val_proba, temperature)),
    }
    summary = load_summary(run_dir)
    card: dict[str, Any] = {"run": str(run_dir.resolve()), "intended_use": INTENDED_USE, "limits": LIMITS,
                            **data_and_split(summary), "test": None}
    y = preds[0].test_y
    if len(y) and (y >= 0).all():
        raw = ensemble.predict_proba([p.test_proba for p in preds])
        scaled = ensemble.predict_proba([calibration.apply_temperature(p.test_proba, temperature) for p in preds])
        card["test"] = test_metrics(summary, choice.name)
        cal["test"] = calibration_facts(y, raw, scaled)
        calibration.reliability_diagram(root / "reliability.png", y, raw, scaled, f"{choice.name}: test set")
        if cal["test"]["ece_after"] > cal["test"]["ece_before"]:
            cal["default"] = "raw"  # calibration made the test ECE worse: predict gives raw probabilities unless asked
    sizes = sorted({m["data"]["image_size"] for m in members if m["data"]["image_size"]})
    sections = _abstain_sections(run_dir, root, classes, members, preds, temperature, ensemble, card, abstain,
                                 summary.config.evaluation)
    manifest: dict[str, Any] = {
        "format": FORMAT, "format_version": FORMAT_VERSION, "name": choice.name, "kind": choice.kind,
        "weighting": choice.weighting, "chosen_as": choice.info.get("chosen_as"), "classes": classes,
        "descriptions": class_descriptions(classes, card["data"]),
        "members": members, "calibration": cal, "card": card,
        "input": {"description": INPUT_DESCRIPTION, "color": "RGB", "image_size": sizes[0] if len(sizes) == 1 else sizes or None,
                  "tensor": "float32 (n, 3, H, W), normalised with each member's data_config mean/std",
                  "output": "probabilities (n, K) in class order"},
        "versions": {"allwen": __version__, "timm": timm.__version__, "torch": torch.__version__,
                     "python": platform.python_version()},
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"), "formats": ["safetensors"],
        **sections,
    }
    if fmt == "onnx":
        manifest["formats"].append("onnx")
        manifest["onnx"] = _export_onnx(root, manifest)
        if manifest.get("ood"):  # the OOD member's backbone too, so ONNX predict scores OOD without torch
            from allwen.serve.abstain import FEATURES_ONNX, export_features_onnx

            spec = manifest["members"][manifest["ood"]["member_index"]]
            member = Member(spec["name"], spec["weight"], root / spec["folder"], spec, classes)
            manifest["ood"]["features_onnx"] = export_features_onnx(member, root / spec["folder"] / FEATURES_ONNX)
    from allwen.serve.abstain import CARD_FILE, card_markdown

    atomic_write_text(root / "MODEL_CARD.md", render_markdown(manifest) + card_markdown(manifest))
    atomic_write_json(root / CARD_FILE, {"name": choice.name, "classes": classes, **card})
    return manifest


def _abstain_sections(run_dir: Path, root: Path, classes: list[str], members: list[dict[str, Any]], preds: list,
                      temperature: float, ensemble: Any, card: dict[str, Any], settings: Any, evaluation: Any) -> dict[str, Any]:
    """Issue 21's ``selective``, ``conformal``, ``ood`` and ``patient`` sections; their test evidence into ``card``.

    Intervals use the run's own bootstrap settings (``evaluation.bootstrap``, ``confidence``, ``seed``).
    """
    import dataclasses

    from allwen.serve.abstain import AbstainSettings, coverage_plot, fit_sections

    settings = dataclasses.replace(settings or AbstainSettings(), n_boot=int(evaluation.bootstrap) or 1000,
                                   confidence=float(evaluation.confidence), seed=int(evaluation.seed),
                                   stratify=bool(evaluation.stratify))
    objs = [Member(m["name"], float(m["weight"]), root / m["folder"], m, classes) for m in members]
    sections, evidence = fit_sections(run_dir, root, classes, objs, preds, temperature, ensemble.predict_proba, settings,
                                      vote=getattr(ensemble, "weighting", "") == "vote")
    card.update({k: v for k, v in evidence.items() if v is not None})
    if card.get("selective"):
        coverage_plot(root / "coverage.png", card["selective"])
    return sections


def _export_onnx(root: Path, manifest: dict[str, Any]) -> dict[str, Any]:
    """Each member as ONNX, checked against PyTorch on a random batch (max difference recorded)."""
    import torch

    from allwen.serve.onnx_runtime import ONNX_FILE, OPSET, export_onnx, onnx_session, session_forward

    classes = list(manifest["classes"])
    worst = 0.0
    for spec in manifest["members"]:
        member = Member(spec["name"], spec["weight"], root / spec["folder"], spec, classes)
        model = member.model()
        path = export_onnx(model, root / spec["folder"] / ONNX_FILE, spec["data"]["image_size"])
        side = spec["data"]["image_size"] or 224
        x = torch.randn(3, 3, side, side, generator=torch.Generator().manual_seed(0))
        with torch.no_grad():
            expected = model.probabilities(model(x)).numpy()
        got = session_forward(onnx_session(path, torch.device("cpu")))(x).numpy()
        worst = max(worst, float(np.abs(expected - got).max()))
    if worst > 1e-4:
        raise ValueError(f"ONNX export differs from PyTorch by {worst:.2e} (> 1e-4); export without --format onnx")
    return {"opset": OPSET, "input": "input", "output": "probabilities", "max_abs_diff_vs_torch": worst}
