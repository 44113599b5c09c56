"""A bundle's files checked against its manifest: every file hashed, every weights file saved for what
``bundle.json`` says. Reads JSON and safetensors headers only (nothing is unpickled, no framework)."""

from __future__ import annotations

import hashlib
import json
import logging
import struct
from pathlib import Path
from typing import Any

from allwen.bundle.layout import BUNDLE_FILE, BUNDLE_HASH, WEIGHTS, BundleFolder
from allwen.bundle.manifest import FIX, Manifest
from allwen.bundle.preprocessing import Preprocessing
from allwen.io import file_sha256

log = logging.getLogger(__name__)

MAX_HEADER_BYTES = 100_000_000
#: the key of a unit's :class:`Preprocessing` in its weights' metadata (written at training)
PREPROCESSING_KEY = "preprocessing"


def decode_metadata(raw: dict[str, str] | None) -> dict[str, Any]:
    """safetensors metadata (str -> str) with each JSON value decoded; values written by others stay strings."""
    decoded: dict[str, Any] = {}
    for key, value in (raw or {}).items():
        try:
            decoded[key] = json.loads(value)
        except ValueError:
            decoded[key] = value
    return decoded


def safetensors_metadata(path: Path) -> dict[str, Any]:
    """The JSON-decoded metadata of a safetensors file, read from its header with no framework."""
    try:
        with open(path, "rb") as handle:
            (length,) = struct.unpack("<Q", handle.read(8))
            if length > MAX_HEADER_BYTES:
                raise ValueError("header too large")
            header = json.loads(handle.read(length))
        if not isinstance(header, dict):
            raise ValueError("header is not a JSON object")
    except (OSError, ValueError, struct.error) as exc:
        raise ValueError(f"{path}: not a valid safetensors file ({exc}); {FIX}") from None
    return decode_metadata(header.get("__metadata__"))


def seal(folder: BundleFolder) -> Path:
    """Write ``bundle.json.sha256``: the manifest's own hash (export writes it last)."""
    from allwen.io import atomic_write_text

    return atomic_write_text(folder.manifest_hash, file_sha256(folder.manifest_path) + "\n")


def check_seal(folder: BundleFolder, data: bytes) -> None:
    """``data`` (the bundle.json that was read) has the sha256 its seal recorded. Bundles exported before
    the seal existed have none: they load, with a warning."""
    path = folder.manifest_hash
    if not path.is_file():
        log.warning("%s: no %s (exported by an older allwen): bundle.json itself cannot be checked",
                    folder.root, BUNDLE_HASH)
        return
    recorded = path.read_text(encoding="ascii", errors="replace").strip()
    if hashlib.sha256(data).hexdigest() != recorded:
        raise ValueError(f"{folder.manifest_path}: sha256 differs from {BUNDLE_HASH}; bundle.json was changed or "
                         "damaged after export, so the bundle is refused; copy the bundle again or re-export it")


def verify_files(root: Path, manifest: Manifest) -> None:
    """Every listed file is inside the bundle, present, and has the recorded sha256."""
    base = root.resolve()
    for rel, expected in manifest.files.items():
        path = (root / rel).resolve()
        if base not in path.parents:
            raise ValueError(f"{root / BUNDLE_FILE}: field files: {rel!r} points outside the bundle; {FIX}")
        if not path.is_file():
            raise ValueError(f"{root / rel}: missing from the bundle (listed in bundle.json field files); copy the "
                             "whole bundle folder again")
        if file_sha256(path) != expected:
            raise ValueError(f"{root / rel}: sha256 differs from bundle.json field files; the file was changed or "
                             "damaged after export, so it is refused; copy the bundle again or re-export it")


def saved_preprocessing(meta: dict[str, Any]) -> dict[str, Any] | None:
    """What a weights file says about its preprocessing, as bundle.json's keys: the unit's record, or
    (units trained before it existed) the keys they saved (size, CLAHE on/off, the backbone's config)."""
    if PREPROCESSING_KEY in meta:
        return Preprocessing.model_validate(meta[PREPROCESSING_KEY]).model_dump(mode="json", exclude_unset=True)
    legacy = {k: meta[k] for k in ("image_size", "clahe") if k in meta}
    if isinstance(meta.get("data_config"), dict):
        legacy.update(meta["data_config"])
    return legacy or None


def check_member_metadata(root: Path, manifest: Manifest) -> None:
    """Each member's weights file was saved for the classes, backbone, head and preprocessing bundle.json names."""
    for i, member in enumerate(manifest.members):
        path = root / member.folder / WEIGHTS
        meta = safetensors_metadata(path)
        expected = {"classes": manifest.classes, "backbone": member.backbone, "head": member.head}
        for key, want in expected.items():
            if key in meta and meta[key] != want:
                field = "classes" if key == "classes" else f"members.{i}.{key}"
                raise ValueError(f"{path}: saved for {key} {meta[key]!r}, but bundle.json field {field} says {want!r}; "
                                 f"{FIX}")
        try:
            saved = saved_preprocessing(meta)
        except ValueError as exc:
            raise ValueError(f"{path}: its preprocessing metadata is not valid ({' '.join(str(exc).split())[:200]}); "
                             f"{FIX}") from None
        mine = member.preprocessing.model_dump(mode="json", exclude_unset=True)
        for key, value in (saved or {}).items():
            if key in mine and mine[key] != value:
                section = "data" if key in member.data.model_fields else "data_config"
                raise ValueError(f"{path}: saved for {key} {value!r}, but bundle.json field members.{i}.{section}.{key} "
                                 f"says {mine[key]!r}; {FIX}")


__all__ = ["PREPROCESSING_KEY", "check_member_metadata", "check_seal", "seal", "decode_metadata", "safetensors_metadata", "verify_files"]
