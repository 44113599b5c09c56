"""Every file name of a bundle folder; the one place they are spelled.

```
BUNDLE/bundle.json.sha256          the manifest's own sha256
BUNDLE/bundle.json                 the manifest (:class:`allwen.bundle.Manifest`): classes, members, ensemble
                                   weighting, calibration, referral/sets/OOD/patient sections, model card,
                                   versions, input format, and the sha256 of every other file
BUNDLE/MODEL_CARD.md, card.json    the model card for people, and as JSON
BUNDLE/reliability.png, coverage.png   its calibration plot and accuracy-coverage curve
BUNDLE/ood.safetensors             the OOD detector's arrays
BUNDLE/members/NN_<name>/          weights.safetensors, data_config.json (the unit's Preprocessing),
                                   model.onnx and (the OOD member) features.onnx with --format onnx
```
"""

from __future__ import annotations

from pathlib import Path

from allwen.io import safe_name

BUNDLE_FILE = "bundle.json"
BUNDLE_HASH = "bundle.json.sha256"  # the manifest's own sha256 (the manifest hashes every other file)
MODEL_CARD = "MODEL_CARD.md"
CARD_FILE = "card.json"  # the model card as JSON, beside MODEL_CARD.md
RELIABILITY_PNG = "reliability.png"
COVERAGE_PNG = "coverage.png"
OOD_FILE = "ood.safetensors"
MEMBERS_DIR = "members"
WEIGHTS = "weights.safetensors"
DATA_CONFIG = "data_config.json"
ONNX_FILE = "model.onnx"
FEATURES_ONNX = "features.onnx"  # the OOD member's backbone as ONNX (pooled features), for torch-free predict
#: the files every member folder holds (hashed in bundle.json's ``files``)
MEMBER_FILES = (WEIGHTS, DATA_CONFIG)


def member_folder(index: int, name: str) -> str:
    """``members/NN_<safe name>``, relative to the bundle."""
    return f"{MEMBERS_DIR}/{index:02d}_{safe_name(name)}"


class BundleFolder:
    """The paths of one bundle folder (exported or being exported)."""

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)

    def __repr__(self) -> str:
        return f"BundleFolder({str(self.root)!r})"

    @property
    def manifest_path(self) -> Path:
        return self.root / BUNDLE_FILE

    @property
    def manifest_hash(self) -> Path:
        return self.root / BUNDLE_HASH

    @property
    def model_card(self) -> Path:
        return self.root / MODEL_CARD

    @property
    def card_json(self) -> Path:
        return self.root / CARD_FILE

    @property
    def reliability_png(self) -> Path:
        return self.root / RELIABILITY_PNG

    @property
    def coverage_png(self) -> Path:
        return self.root / COVERAGE_PNG

    @property
    def ood(self) -> Path:
        return self.root / OOD_FILE

    def member(self, folder: str) -> Path:
        return self.root / folder

    def weights(self, folder: str) -> Path:
        return self.root / folder / WEIGHTS

    def data_config(self, folder: str) -> Path:
        return self.root / folder / DATA_CONFIG

    def onnx(self, folder: str) -> Path:
        return self.root / folder / ONNX_FILE

    def features_onnx(self, folder: str) -> Path:
        return self.root / folder / FEATURES_ONNX

    def files(self) -> list[Path]:
        """Every file under the folder but ``bundle.json`` and its hash (what its ``files`` hashes), sorted."""
        return [p for p in sorted(self.root.rglob("*")) if p.is_file() and p.relative_to(self.root).as_posix()
                not in (BUNDLE_FILE, BUNDLE_HASH)]


__all__ = ["BUNDLE_FILE", "BUNDLE_HASH", "BundleFolder", "CARD_FILE", "COVERAGE_PNG", "DATA_CONFIG", "FEATURES_ONNX", "MEMBERS_DIR",
           "MEMBER_FILES", "MODEL_CARD", "ONNX_FILE", "OOD_FILE", "RELIABILITY_PNG", "WEIGHTS", "member_folder"]
