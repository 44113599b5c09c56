"""A loaded bundle: one self-contained folder (:mod:`allwen.bundle`) that predicts without the run it came from.

Loading reads ``bundle.json`` once into the typed :class:`~allwen.bundle.Manifest`, checks every
listed file's sha256 and each weights file's metadata (classes, architecture, preprocessing),
loads the OOD detector, chooses the runtime and builds every network, so a bundle that was
changed or damaged after export is refused at start, naming the file; nothing is unpickled.
Bundles are written by :mod:`allwen.export`, which this runtime never imports.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from allwen.bundle import BUNDLE_FILE, ONNX_FILE, BundleFolder, Manifest, check_member_metadata, check_seal, \
    manifest_from_bytes, verify_files
from allwen.bundle.manifest import read_manifest_bytes
from allwen.ensemble.wen import WeightedEnsemble
from allwen.serve.abstain import Abstainer
from allwen.serve.predict import RUNTIMES, Member, device_type, predict_table

log = logging.getLogger(__name__)

LOAD_RUNTIMES = ("auto", *RUNTIMES)
#: bundle.json's top-level fields that ``GET /api/model`` shows (besides members, runtime and input sizes)
CARD_KEYS = ("name", "kind", "weighting", "classes", "descriptions", "calibration", "card", "versions", "input",
             "created", "selective", "conformal", "ood", "patient")
__all__ = ["Bundle", "choose_runtime", "load_bundle"]


@dataclass
class Bundle:
    """A loaded, validated bundle; :meth:`predict` applies it (see :func:`allwen.serve.predict.predict_table`).

    ``runtime`` (``torch`` or ``onnx``) and ``device`` are what :func:`load_bundle` chose and
    built every network for; predictions use them unless told otherwise.
    """

    root: Path
    manifest: Manifest
    members: list[Member]
    ensemble: WeightedEnsemble = field(repr=False)
    runtime: str = "torch"
    device: str = "auto"
    abstainer: Abstainer | None = field(default=None, repr=False)

    @property
    def name(self) -> str:
        return self.manifest.name

    @property
    def classes(self) -> list[str]:
        return list(self.manifest.classes)

    @property
    def temperature(self) -> float:
        return float(self.manifest.calibration.temperature)

    @property
    def calibrate_by_default(self) -> bool:
        """False when export found that calibration made the test ECE worse: raw probabilities then."""
        return self.manifest.calibrate_by_default

    @property
    def descriptions(self) -> dict[str, str]:
        return dict(self.manifest.descriptions)

    @property
    def input_sizes(self) -> list[int]:
        """The square input sides the members were trained at (empty: native size)."""
        return sorted({m.image_size for m in self.members if m.image_size})

    @property
    def card(self) -> dict[str, Any]:
        """The model card as JSON (``GET /api/model``)."""
        members = [m.spec.model_dump(mode="json", include={"name", "weight", "backbone", "head", "data"})
                   for m in self.members]
        return {**{k: self.manifest.section_json(k) for k in CARD_KEYS}, "members": members, "runtime": self.runtime,
                "input_sizes": self.input_sizes}

    def build(self) -> Bundle:
        """Build every member's network in the chosen runtime now; errors name the member's file."""
        wanted = self.abstainer.ood_member if self.abstainer is not None else None
        for i, member in enumerate(self.members):
            member.build(self.runtime, self.device, features=i == wanted)
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


def has_onnx(spec: Manifest) -> bool:
    return "onnx" in spec.formats and all(f"{m.folder}/{ONNX_FILE}" in spec.files for m in spec.members)


def choose_runtime(root: Path, spec: Manifest, runtime: str, device: str) -> str:
    """``auto``: ONNX Runtime on the CPU when the bundle has ONNX members and onnxruntime is installed,
    else PyTorch (on a GPU, or for bundles exported without ONNX)."""
    if runtime not in LOAD_RUNTIMES:
        raise ValueError(f"--runtime {runtime!r}: choose from {', '.join(LOAD_RUNTIMES)}")
    if runtime == "onnx" and not has_onnx(spec):
        raise ValueError(f"{root}: this bundle has no ONNX members; re-export it with `allwen export` (ONNX is the "
                         "default) or use --runtime torch")
    if runtime != "auto":
        return runtime
    if has_onnx(spec) and device_type(device) == "cpu":
        import importlib.util

        if importlib.util.find_spec("onnxruntime") is not None:
            return "onnx"
    return "torch"


def load_bundle(path: str | os.PathLike[str], runtime: str = "auto", device: str = "auto",
                build: bool = True) -> Bundle:
    """Open an exported bundle: validate ``bundle.json`` (read once; its own sha256 in ``bundle.json.sha256``),
    check every file's sha256 and each
    weights file's metadata, load the OOD detector, choose the runtime and (``build``) build every network now.

    Any problem is a ValueError of one line naming the file and the field. With
    ``runtime="onnx"`` (or ``auto`` on a CPU with an ONNX bundle) neither torch nor timm is imported.
    """
    folder = BundleFolder(path)
    root = folder.root
    if not folder.manifest_path.is_file():
        raise ValueError(f"{root}: not an allwen bundle (no {BUNDLE_FILE}); make one with `allwen export RUN --out {root}`")
    data = read_manifest_bytes(folder.manifest_path)  # read once: validated, then checked against its seal
    spec = manifest_from_bytes(data, folder.manifest_path)
    check_seal(folder, data)
    verify_files(root, spec)
    check_member_metadata(root, spec)
    classes = list(spec.classes)
    members = [Member(m.name, float(m.weight), folder.member(m.folder), m, classes) for m in spec.members]
    ensemble = WeightedEnsemble.from_weights(spec.weighting, [m.name for m in members], [m.weight for m in members],
                                             len(classes))
    abstainer = Abstainer.of(spec, root)
    chosen = choose_runtime(root, spec, runtime, device)
    bundle = Bundle(root, spec, members, ensemble, runtime=chosen, device=device, abstainer=abstainer)
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
