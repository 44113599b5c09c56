"""The bundle layer: the one owner of a bundle folder's names and of ``bundle.json``'s typed format.

A base layer like :mod:`allwen.runfolder`: :mod:`allwen.export` writes bundles through it,
:mod:`allwen.serve` reads them through it; it imports neither torch nor timm, nor the run folder.
"""

from allwen.bundle.files import (PREPROCESSING_KEY, check_member_metadata, check_seal, decode_metadata,
                                 safetensors_metadata, seal, verify_files)
from allwen.bundle.layout import (BUNDLE_FILE, BUNDLE_HASH, CARD_FILE, COVERAGE_PNG, DATA_CONFIG, FEATURES_ONNX, MEMBER_FILES,
                                  MODEL_CARD, ONNX_FILE, OOD_FILE, RELIABILITY_PNG, WEIGHTS, BundleFolder, member_folder)
from allwen.bundle.manifest import (FIX, FORMAT, FORMAT_VERSION, SECTIONS, Manifest, MemberSpec, manifest_from_bytes,
                                    parse_manifest)
from allwen.bundle.preprocessing import Preprocessing

__all__ = [
    "BUNDLE_FILE", "BUNDLE_HASH", "BundleFolder", "CARD_FILE", "COVERAGE_PNG", "DATA_CONFIG", "FEATURES_ONNX", "FIX", "FORMAT",
    "FORMAT_VERSION", "MEMBER_FILES", "MODEL_CARD", "Manifest", "MemberSpec", "ONNX_FILE", "OOD_FILE", "PREPROCESSING_KEY",
    "Preprocessing", "RELIABILITY_PNG", "SECTIONS", "WEIGHTS", "check_member_metadata", "check_seal", "decode_metadata",
    "manifest_from_bytes", "member_folder", "parse_manifest", "safetensors_metadata", "seal", "verify_files",
]
