"""Apply a bundle to images: each member's probabilities, calibration, the ensemble, a table.

A member preprocesses with its own saved settings (size, CLAHE, its backbone's normalisation)
and runs in PyTorch or onnxruntime; members' probabilities are temperature-scaled (unless
``calibrate=False``) and combined with the ensemble weights exactly as the run combined them
(:class:`allwen.ensemble.WeightedEnsemble`). Images go through in batches, so a folder of any
size needs memory for one batch only; a file that cannot be read gets a row with the reason.

Nothing here imports torch at module level: with ``runtime="onnx"`` a process predicts with
onnxruntime, numpy and PIL only (:mod:`allwen.serve.preprocess`), and starts in about a second.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import pandas as pd
from PIL import Image

from allwen.bundle import FEATURES_ONNX, ONNX_FILE, WEIGHTS, MemberSpec
from allwen.evaluation.metrics import predict_labels
from allwen.serve.calibration import apply_temperature
from allwen.serve.outputs import check_outputs, mark_overlay_folder, overlay_names
from allwen.serve.status import CellStatus, cell_statuses, unreadable
from allwen.serve.images import DEFAULT_MAX_BYTES, DEFAULT_MAX_PIXELS, ImageRejected, as_rgb, expand_inputs, read_image_file

if TYPE_CHECKING:
    import torch

    from allwen.models.heads import ClassifierModel

log = logging.getLogger(__name__)
RUNTIMES = ("torch", "onnx")
DEVICES = ("auto", "cpu", "cuda")


def gpu_present() -> bool:
    """Whether a CUDA GPU can be used, without importing torch when there is plainly none."""
    if sys.platform.startswith("linux") and not any(os.path.exists(p) for p in ("/dev/nvidiactl", "/dev/nvidia0")):
        return False
    import torch

    return bool(torch.cuda.is_available())


def check_device(device: str) -> str:
    """``auto``, ``cpu``, ``cuda`` or ``cuda:N``; a one-line error for anything else or a missing GPU."""
    text = str(device)
    base = text.split(":", 1)[0]
    if base not in DEVICES or (":" in text and (base != "cuda" or not text.split(":", 1)[1].isdigit())):
        raise ValueError(f"--device {text!r}: choose from auto, cpu, cuda (or cuda:N)")
    if base == "cuda" and not gpu_present():
        raise ValueError(f"--device {text}: no CUDA GPU is available on this machine; use --device cpu (or auto)")
    return text


def resolve_device(device: Any = "auto") -> torch.device:
    """``auto``: the GPU when there is one, else the CPU (a torch.device; imports torch)."""
    import torch

    if device is None or str(device) == "auto":
        return torch.device("cuda" if gpu_present() else "cpu")
    return torch.device(check_device(str(device)) if isinstance(device, str) else device)


def device_type(device: Any) -> str:
    """``cpu`` or ``cuda`` for a device name or torch.device, without importing torch for names."""
    if device is None or str(device) == "auto":
        return "cuda" if gpu_present() else "cpu"
    return str(getattr(device, "type", None) or check_device(str(device))).split(":", 1)[0]


@dataclass
class Member:
    """One network of a bundle: its files, its typed spec (architecture, preprocessing) and (lazily built) runtimes."""

    name: str
    weight: float
    folder: Path
    spec: MemberSpec
    classes: list[str]
    _model: ClassifierModel | None = field(default=None, repr=False)
    _sessions: dict[str, Any] = field(default_factory=dict, repr=False)
    _transform: Callable | None = field(default=None, repr=False)

    @property
    def image_size(self) -> int | None:
        return self.spec.image_size

    def transform(self, image: Image.Image) -> torch.Tensor:
        """The training run's evaluation preprocessing for this member (no augmentation)."""
        if self._transform is None:
            from allwen.data.transforms import build_transform

            pre = self.spec.preprocessing
            self._transform = build_transform(pre, pre.metadata(), train=False)
        return self._transform(image)

    def array(self, image: Image.Image) -> np.ndarray:
        """The same preprocessing in numpy and PIL (for onnxruntime): float32 (3, H, W)."""
        from allwen.serve.preprocess import preprocess

        return preprocess(image, self.spec.preprocessing)

    def model(self) -> ClassifierModel:
        """The PyTorch network, built from the architecture names and the member's safetensors file."""
        if self._model is None:
            from allwen.config.schema import ModelConfig
            from allwen.models import build_classifier, load_weights

            path = self.folder / WEIGHTS
            cfg = ModelConfig(backbone=self.spec.backbone, weights="none", head=self.spec.head,
                              dropout=self.spec.dropout, activation=self.spec.activation,
                              layer_defaults=self.spec.layer_defaults)
            try:
                model = build_classifier(cfg, len(self.classes))
                meta = load_weights(model, path)
            except (RuntimeError, KeyError, ValueError) as exc:
                first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                raise ValueError(f"{path}: does not fit member {self.name!r} ({self.spec.backbone}, head "
                                 f"{self.spec.head}, {len(self.classes)} classes): {first[:300]}; re-export the "
                                 "bundle with `allwen export`") from None
            if meta.get("classes", self.classes) != self.classes:
                raise ValueError(f"{path}: classes {meta.get('classes')} differ from the bundle's {self.classes}")
            self._model = model.eval()
        return self._model

    def session(self, device: str = "cpu") -> Any:
        """The onnxruntime session of ``model.onnx``, checked to output one probability per class."""
        if device not in self._sessions:
            from allwen.serve.onnx_runtime import onnx_session

            path = self.folder / ONNX_FILE
            if not path.is_file():
                raise ValueError(f"{path} is missing: export the bundle with `--format onnx` to use --runtime onnx")
            session = onnx_session(path, device)
            width = session.get_outputs()[0].shape[-1]
            if isinstance(width, int) and width != len(self.classes):
                raise ValueError(f"{path}: outputs {width} probabilities, but the bundle has {len(self.classes)} "
                                 f"classes {self.classes}; re-export the bundle with `allwen export`")
            self._check_side(path, session)
            self._sessions[device] = session
        return self._sessions[device]

    def features_session(self, device: str = "cpu") -> Any | None:
        """The onnxruntime session of the member's ``features.onnx`` (the OOD member's, written at export), or None."""
        key = f"features:{device}"
        if key not in self._sessions:
            from allwen.serve.onnx_runtime import onnx_session

            path = self.folder / FEATURES_ONNX
            if not path.is_file():
                return None
            session = onnx_session(path, device)
            self._check_side(path, session)
            self._sessions[key] = session
        return self._sessions[key]

    def _check_side(self, path: Path, session: Any) -> None:
        """A graph fixed at another input size than the member's preprocessing would be fed the wrong tensor."""
        from allwen.serve.onnx_runtime import fixed_side

        side = fixed_side(session)
        if side is not None and side != self.image_size:
            raise ValueError(f"{path}: its input is fixed at {side} x {side} pixels, but bundle.json field "
                             f"members.data.image_size of {self.name!r} says {self.image_size}; re-export the bundle")

    def build(self, runtime: str, device: Any = "auto", features: bool = False) -> None:
        """Build this member's network now (serve does it at start-up, so no request pays or fails);
        ``features``: its ``features.onnx`` too (the OOD member of an ONNX bundle)."""
        if runtime == "onnx":
            self.session(device_type(device))
            if features:
                self.features_session(device_type(device))
        else:
            self.model().to(resolve_device(device))

    def forward(self, runtime: str, device: Any) -> Callable:
        """A batch -> class probabilities (n, K) function: numpy arrays for onnx, tensors for torch."""
        if runtime == "onnx":
            from allwen.serve.onnx_runtime import session_forward

            return session_forward(self.session(device_type(device)))
        if runtime != "torch":
            raise ValueError(f"runtime {runtime!r}: choose from {', '.join(RUNTIMES)}")
        import torch

        device = resolve_device(device)
        model = self.model().to(device)

        def forward(x: torch.Tensor) -> torch.Tensor:
            with torch.no_grad():
                return model.probabilities(model(x.to(device)).float()).cpu()

        return forward


def _dihedral_mean(forward: Callable[[np.ndarray], np.ndarray], x: np.ndarray) -> np.ndarray:
    """:func:`allwen.models.tta.tta_probabilities` in numpy: the mean over the 8 dihedral views."""
    mirrored = x[..., ::-1]
    views = [np.rot90(x, k, axes=(-2, -1)) for k in range(4)] + [np.rot90(mirrored, k, axes=(-2, -1)) for k in range(4)]
    return np.mean([forward(np.ascontiguousarray(v)) for v in views], axis=0)


def _member_batch(member: Member, images: Sequence[Image.Image], tta: bool, runtime: str, device: Any,
                  features: bool = False) -> tuple[np.ndarray, np.ndarray | None]:
    """One member's probabilities (n, K) for in-memory RGB images, and its OOD rows (n, d + 6) if asked
    (pooled features and the input's colour statistics).

    Features (the OOD score's input) come from the plain view: in PyTorch from the same pass as
    the probabilities; with onnxruntime from the member's ``features.onnx`` (written at export),
    so no torch is imported; None when an ONNX bundle has no such file.
    """
    forward = member.forward(runtime, device)
    if runtime == "onnx":
        run = (lambda x: _dihedral_mean(forward, x)) if tta else forward
        arrays = [member.array(image) for image in images]
        batches = [np.stack(arrays)] if len({a.shape for a in arrays}) == 1 else [a[None] for a in arrays]
        proba = np.concatenate([np.asarray(run(x), dtype=np.float64) for x in batches])
        feats = None
        session = member.features_session(device_type(device)) if features else None
        if session is not None:
            from allwen.serve.onnx_runtime import onnx_features

            feats = np.concatenate([_with_input_statistics(onnx_features(session)(x), x) for x in batches])
        return proba, feats
    import torch

    from allwen.models.tta import tta_probabilities

    device = resolve_device(device)
    tensors = [member.transform(image) for image in images]
    batches = [torch.stack(tensors)] if len({tuple(t.shape) for t in tensors}) == 1 else [t[None] for t in tensors]
    if features and not tta:
        model = member.model().to(device)
        probas, feats = [], []
        with torch.no_grad():
            for x in batches:
                f = model.features(x.to(device))
                feats.append(_with_input_statistics(f.float().cpu().numpy().astype(np.float64), x.numpy()))
                probas.append(model.probabilities(model.head_forward(f).float()).cpu().numpy().astype(np.float64))
        return np.concatenate(probas), np.concatenate(feats)
    run = (lambda x: tta_probabilities(forward, x)) if tta else forward
    proba = np.concatenate([run(x).numpy().astype(np.float64) for x in batches])
    feats = None
    if features:
        model = member.model().to(device)
        with torch.no_grad():
            feats = np.concatenate([_with_input_statistics(model.features(x.to(device)).float().cpu().numpy()
                                                           .astype(np.float64), x.numpy()) for x in batches])
    return proba, feats


def _with_input_statistics(feats: np.ndarray, x: np.ndarray) -> np.ndarray:
    """The OOD score's rows: pooled features, then the input batch's colour statistics (:mod:`allwen.evaluation.ood`)."""
    from allwen.evaluation.ood import input_statistics

    return np.concatenate([feats, input_statistics(x)], axis=1)


class LoadedBundle(Protocol):
    """What prediction needs of a loaded :class:`~allwen.serve.bundle.Bundle` (which calls in here)."""

    members: list[Member]
    ensemble: Any
    runtime: str
    device: str
    abstainer: Any

    @property
    def classes(self) -> list[str]: ...

    @property
    def temperature(self) -> float: ...

    @property
    def calibrate_by_default(self) -> bool: ...


@dataclass
class Prediction:
    """A batch's results: the bundle's probabilities (n, K), each member's (M, n, K), optional overlays."""

    proba: np.ndarray
    members: np.ndarray
    overlays: list[np.ndarray] | None = None
    #: ``refer``, ``set_<level>``, ``ood_score``, ``ood`` per image (:class:`allwen.serve.abstain.Abstainer`)
    abstain: dict[str, list] = field(default_factory=dict)
    #: each image's status and reasons, decided once here (:mod:`allwen.serve.status`)
    status: list[CellStatus] = field(default_factory=list)


def combine(bundle: LoadedBundle, member_probas: np.ndarray, calibrate: bool | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Temperature-scale each member (``calibrate``; None: the bundle's default), then combine with
    the ensemble weights."""
    calibrate = bundle.calibrate_by_default if calibrate is None else calibrate
    temperature = bundle.temperature if calibrate else 1.0
    scaled = np.stack([apply_temperature(p, temperature) for p in member_probas])
    return bundle.ensemble.predict_proba(list(scaled)), scaled


def predict_images(bundle: LoadedBundle, images: Sequence[Image.Image], *, tta: bool = False, calibrate: bool | None = None,
                   runtime: str | None = None, device: Any = None, explain: bool = False) -> Prediction:
    """Probabilities of in-memory RGB images; Grad-CAM overlays of the predicted class when ``explain``.

    ``runtime``/``device`` None: those the bundle was loaded with.
    """
    runtime = runtime or bundle.runtime
    device = bundle.device if device is None else device
    abstainer = bundle.abstainer
    wanted = abstainer.ood_member if abstainer is not None else None
    outputs = [_member_batch(m, images, tta, runtime, device, features=(i == wanted)) for i, m in enumerate(bundle.members)]
    raw = np.stack([p for p, _ in outputs])
    proba, members = combine(bundle, raw, calibrate)
    abstain: dict[str, list] = {}
    decision = proba
    if abstainer is not None:
        # thresholds were fitted on calibrated probabilities: compare with those, whatever is shown
        decision = combine(bundle, raw, abstainer.calibrated)[0]
        abstain = abstainer.apply(decision, outputs[wanted][1] if wanted is not None else None)
    status = abstainer.statuses(decision, abstain) if abstainer is not None else cell_statuses(decision, {})
    overlays = None
    if explain:
        from allwen.serve.explain import gradcam_overlays

        overlays = gradcam_overlays(bundle, images, predict_labels(proba), resolve_device(device))
    return Prediction(proba, members, overlays, abstain, status)


def member_column(member: str, cls: str) -> str:
    """Column of a member's probability in a predictions table: ``<member>:prob_<class>``."""
    return f"{member}:prob_{cls}"


def predict_table(bundle: LoadedBundle, inputs: Sequence[Any], *, tta: bool = False, calibrate: bool | None = None,
                  runtime: str | None = None, device: Any = None, batch_size: int = 16,
                  explain_dir: str | Path | None = None, max_bytes: int = DEFAULT_MAX_BYTES,
                  max_pixels: int = DEFAULT_MAX_PIXELS, progress: Callable[[int], None] | None = None,
                  overwrite: bool = False) -> pd.DataFrame:
    """One row per input: ``path``, ``predicted``, ``prob_<class>``, each member's, then ``error``.

    ``inputs``: file paths, folders, glob patterns, PIL images or uint8 arrays. A row whose
    ``error`` is not empty could not be predicted (the text says why); the others still are.
    ``progress`` is called with the number of inputs finished after each batch.
    """
    if batch_size < 1:
        raise ValueError(f"batch size must be at least 1, not {batch_size}")
    if runtime is not None and runtime not in RUNTIMES:
        raise ValueError(f"runtime {runtime!r}: choose from {', '.join(RUNTIMES)}")
    paths = [str(i) for i in inputs if isinstance(i, (str, Path))]
    items: list[tuple[str, Any]] = [(p, p) for p in expand_inputs(paths)] if len(paths) == len(inputs) else [
        (str(item), item) if isinstance(item, (str, Path)) else (f"<image {k}>", item) for k, item in enumerate(inputs)
    ]
    explain_dir = Path(explain_dir) if explain_dir is not None else None
    if explain_dir is not None:  # never into a folder of inputs, never over an overlay (the CLI checks all outputs)
        check_outputs(paths, explain=explain_dir, overwrite=overwrite)
        mark_overlay_folder(explain_dir)
    names = overlay_names(label for label, _ in items)
    classes, n_classes = bundle.classes, len(bundle.classes)
    proba = np.full((len(items), n_classes), np.nan)
    members = np.full((len(bundle.members), len(items), n_classes), np.nan)
    errors, overlays = [""] * len(items), [""] * len(items)
    statuses: list[CellStatus | None] = [None] * len(items)
    abstain: dict[str, list] = {}
    for start in range(0, len(items), batch_size):
        chunk = range(start, min(start + batch_size, len(items)))
        images, rows = [], []
        for i in chunk:
            label, item = items[i]
            try:
                images.append(read_image_file(item, max_bytes, max_pixels) if isinstance(item, (str, Path)) else as_rgb(item))
                rows.append(i)
            except ImageRejected as exc:
                errors[i] = str(exc)
                log.info("%s: %s", label, exc)  # the row's error column says it; the CLI prints it
        if images:
            result = predict_images(bundle, images, tta=tta, calibrate=calibrate, runtime=runtime, device=device,
                                    explain=explain_dir is not None)
            proba[rows], members[:, rows] = result.proba, result.members
            for i, status in zip(rows, result.status):
                statuses[i] = status
            for key, values in result.abstain.items():
                column = abstain.setdefault(key, [None] * len(items))
                for i, value in zip(rows, values):
                    column[i] = value
            for k, i in enumerate(rows if result.overlays is not None else []):
                from allwen.serve.explain import save_png

                overlays[i] = str(save_png(result.overlays[k], explain_dir / names[i]))
        if progress is not None:
            progress(len(chunk))
    table = pd.DataFrame({"path": [label for label, _ in items]})
    ok = np.array([not e for e in errors], dtype=bool)
    decided = [s if e == "" and s is not None else unreadable(e) for s, e in zip(statuses, errors)]
    table["status"] = [s.status for s in decided]
    table["reason"] = [s.reason for s in decided]
    table["predicted"] = [classes[k] if good else "" for k, good in zip(predict_labels(np.nan_to_num(proba)), ok)]
    for k, cls in enumerate(classes):
        table[f"prob_{cls}"] = proba[:, k]
    for key, values in abstain.items():
        table[key] = pd.array(values, dtype="boolean") if key in ("refer", "ood") else values
    for m, member in enumerate(bundle.members):
        for k, cls in enumerate(classes):
            table[member_column(member.name, cls)] = members[m, :, k]
    if explain_dir is not None:
        table["explanation"] = overlays
    table["error"] = errors
    return table
