"""``allwen export``: one model of a finished run as a self-contained bundle folder.

The run is opened once (:func:`allwen.export.choice.open_run`: one :class:`~allwen.runfolder.RunFolder`,
one :class:`~allwen.evaluation.results.Summary`), and everything the bundle needs is taken from
them: the recorded choice, each member's files and recorded preprocessing, its saved predictions
(read and checked once, cached by the folder), the split, the run's statistics settings. The
bundle is built in a temporary folder beside ``out``, its manifest validated as
:class:`~allwen.bundle.Manifest` before it is written, and renamed into place.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import platform
import shutil
import tempfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from allwen import __version__
from allwen.bundle import FORMAT, FORMAT_VERSION, BundleFolder, Manifest, MemberSpec, seal
from allwen.ensemble.combine import votes
from allwen.ensemble.wen import WeightedEnsemble
from allwen.evaluation.results import Summary
from allwen.export.choice import ModelChoice, member_predictions, open_run, resolve_model
from allwen.export.members import member_spec
from allwen.export.sections import AbstainSettings
from allwen.export.timing import phase
from allwen.io import atomic_write_json, atomic_write_text, file_sha256, user_modes
from allwen.runfolder import RunFolder, UnitPredictions
from allwen.serve import calibration
from allwen.serve.predict import Member

log = logging.getLogger(__name__)

FORMATS = ("safetensors", "onnx")
INPUT_DESCRIPTION = (
    "one image file per cell (BMP, PNG, JPEG, TIFF; read by content, converted to RGB); each member resizes "
    "and normalises it with its own saved settings"
)


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


def export_bundle(run_dir: str | os.PathLike[str] | RunFolder, out: str | os.PathLike[str], model: str | None = None,
                  fmt: str | None = None, abstain: AbstainSettings | None = None) -> Path:
    """Write the bundle of ``model`` (default: the run's recorded ``default_export``) to ``out``.

    ``fmt``: ``onnx`` (the default when installed: ONNX members beside the safetensors weights)
    or ``safetensors``. Built in a temporary folder beside ``out`` and renamed into place, so an
    interrupted export leaves no half bundle under the real name.
    """
    out = Path(out)
    fmt = fmt or default_format()
    if fmt not in FORMATS:
        raise ValueError(f"--format {fmt!r}: choose from {', '.join(FORMATS)}")
    _check_out(out)
    with phase("open run and predictions"):
        folder, summary = open_run(run_dir)
        choice = resolve_model(folder, summary, model)
        preds = member_predictions(folder, choice.members)
    classes = preds[0].classes
    for p in preds:
        if p.classes != classes:
            raise ValueError(f"units {preds[0].name} and {p.name} have different classes")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        bundle = BundleFolder(tmp)
        contents = _write_contents(folder, summary, bundle, choice, preds, classes, fmt, abstain)
        with phase("hashes, manifest and seal"):
            contents["files"] = {p.relative_to(tmp).as_posix(): file_sha256(p) for p in bundle.files()}
            manifest = Manifest.model_validate(contents)  # what we write must be what we accept
            atomic_write_json(bundle.manifest_path, manifest.as_json())
            seal(bundle)
        _check_out(out)
        user_modes(tmp)  # mkdtemp's folder is 0700: a lab's service account could not read the bundle
        if out.exists():
            out.rmdir()
        os.replace(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    log.info("bundle %s (%s) written to %s", choice.name, choice.kind, out)
    return out


def _write_contents(folder: RunFolder, summary: Summary, bundle: BundleFolder, choice: ModelChoice,
                    preds: list[UnitPredictions], classes: list[str], fmt: str,
                    abstain: AbstainSettings | None = None) -> dict[str, Any]:
    import timm
    import torch

    from allwen.export.card import (INTENDED_USE, LIMITS, calibration_facts, card_markdown, class_descriptions,
                                    data_and_split, render_markdown, test_metrics)
    from allwen.export.plots import reliability_diagram

    specs: list[MemberSpec] = []
    with phase("member files"):
        for i, (name, weight) in enumerate(zip(choice.members, choice.weights)):
            spec, unit = member_spec(folder, i, name, weight)
            bundle.member(spec.folder).mkdir(parents=True)
            shutil.copy2(unit.weights, bundle.weights(spec.folder))
            shutil.copy2(unit.data_config, bundle.data_config(spec.folder))
            specs.append(spec)
    members = [Member(s.name, s.weight, bundle.member(s.folder), s, classes) for s in specs]
    ensemble = WeightedEnsemble.from_weights(choice.weighting, choice.members, choice.weights, len(classes))

    with phase("calibration and test card"):
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
        card: dict[str, Any] = {"run": str(folder.root.resolve()), "intended_use": INTENDED_USE, "limits": LIMITS,
                                **data_and_split(summary), "test": None}
        y = preds[0].test_y
        if len(y) and (y >= 0).all():
            raw = ensemble.predict_proba([p.test_proba for p in preds])
            scaled = ensemble.predict_proba([calibration.apply_temperature(p.test_proba, temperature) for p in preds])
            card["test"] = test_metrics(summary, choice.name)
            cal["test"] = calibration_facts(y, raw, scaled)
            reliability_diagram(bundle.reliability_png, y, raw, scaled, f"{choice.name}: test set")
            if cal["test"]["ece_after"] > cal["test"]["ece_before"]:
                cal["default"] = "raw"  # calibration made the test ECE worse: predict gives raw probabilities unless asked
    sizes = sorted({s.image_size for s in specs if s.image_size})
    sections = _abstain_sections(folder, bundle, classes, members, preds, temperature, ensemble, card, abstain, summary)
    manifest: dict[str, Any] = {
        "format": FORMAT, "format_version": FORMAT_VERSION, "name": choice.name, "kind": choice.kind,
        "weighting": choice.weighting, "chosen_as": choice.info.get("chosen_as"), "classes": classes,
        "descriptions": class_descriptions(classes, card["data"]),
        "members": [s.model_dump(mode="json", exclude_unset=True) for s in specs], "calibration": cal, "card": card,
        "input": {"description": INPUT_DESCRIPTION, "color": "RGB", "image_size": sizes[0] if len(sizes) == 1 else sizes or None,
                  "tensor": "float32 (n, 3, H, W), normalised with each member's data_config mean/std",
                  "output": "probabilities (n, K) in class order"},
        "versions": {"allwen": __version__, "timm": timm.__version__, "torch": torch.__version__,
                     "python": platform.python_version()},
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"), "formats": ["safetensors"],
        **sections,
    }
    if fmt == "onnx":
        from allwen.export.onnx import export_features_onnx, export_members_onnx

        manifest["formats"].append("onnx")
        with phase("onnx: members"):
            manifest["onnx"] = export_members_onnx(bundle, members)
        if manifest.get("ood"):  # the OOD member's backbone too, so ONNX predict scores OOD without torch
            member = members[manifest["ood"]["member_index"]]
            with phase("onnx: OOD features"):
                manifest["ood"]["features_onnx"] = export_features_onnx(member, bundle.features_onnx(member.spec.folder))
    with phase("model card"):
        atomic_write_text(bundle.model_card, render_markdown(manifest) + card_markdown(manifest))
        atomic_write_json(bundle.card_json, {"name": choice.name, "classes": classes, **card})
    return manifest


def _abstain_sections(folder: RunFolder, bundle: BundleFolder, classes: list[str], members: list[Member],
                      preds: list[UnitPredictions], temperature: float, ensemble: WeightedEnsemble,
                      card: dict[str, Any], settings: AbstainSettings | None, summary: Summary) -> dict[str, Any]:
    """Issue 21's ``selective``, ``conformal``, ``ood`` and ``patient`` sections; their test evidence into ``card``.

    Intervals use the run's own bootstrap settings (``evaluation.bootstrap``, ``confidence``, ``seed``).
    """
    from allwen.export.plots import coverage_plot
    from allwen.export.sections import fit_sections

    evaluation = summary.config.evaluation
    settings = dataclasses.replace(settings or AbstainSettings(), n_boot=int(evaluation.bootstrap) or 1000,
                                   confidence=float(evaluation.confidence), seed=int(evaluation.seed),
                                   stratify=bool(evaluation.stratify), min_clusters=int(evaluation.min_clusters))
    sections, evidence = fit_sections(folder, bundle, classes, members, preds, temperature, ensemble.predict_proba,
                                      settings, vote=votes(ensemble.weighting))
    card.update({k: v for k, v in evidence.items() if v is not None})
    if card.get("selective"):
        with phase("model card"):
            coverage_plot(bundle.coverage_png, card["selective"])
    return sections


__all__ = ["FORMATS", "default_format", "export_bundle"]
