"""The adversarial probe's bundle groups as tests: edits of bundle.json that changed answers, and broken
bundles that started serving and then answered 500 to every request.

Every edit is tried twice: as a careless user makes it (bundle.json edited, its seal
``bundle.json.sha256`` left as it was: refused by the seal, naming bundle.json), and as a forger who
re-makes the seal, which the range, type and cross-file checks must still refuse where the value is
invalid. A valid-looking value with a re-made seal (a weighting, a threshold) is what the seal
alone guards against: that limit is stated in docs/reliability.md.
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest

from allwen.bundle import BundleFolder, seal
from allwen.io import file_sha256
from allwen.serve import load_bundle


def _copy(bundle: Path, tmp_path: Path) -> Path:
    out = tmp_path / "copy"
    shutil.copytree(bundle, out)
    return out


def _write(bundle: Path, manifest: dict, reseal: bool) -> None:
    (bundle / "bundle.json").write_text(json.dumps(manifest))
    if reseal:
        seal(BundleFolder(bundle))


def _member(m: dict) -> dict:
    return m["members"][0]


#: the probe's edits of bundle.json that were accepted; each value a change of the manifest
EDITS = {
    "mean 1e30": lambda m: _member(m)["data_config"].update(mean=[1e30, 1e30, 1e30]),
    "NaN in mean": lambda m: _member(m)["data_config"].update(mean=[math.nan, 0.5, 0.5]),
    "interpolation lanczos9": lambda m: _member(m)["data_config"].update(interpolation="lanczos9"),
    "clahe true": lambda m: _member(m)["data"].update(clahe=True),
    "clahe_grid 100000": lambda m: _member(m)["data"].update(clahe_grid=100_000),
    "image_size 64": lambda m: _member(m)["data"].update(image_size=64),
    "image_size null": lambda m: _member(m)["data"].update(image_size=None),
    "selective.probabilities banana": lambda m: m["selective"].update(probabilities="banana"),
    "weighting vote": lambda m: m.update(weighting="vote"),
    "selective.threshold 0": lambda m: m["selective"].update(threshold=0.0),
    "selective.threshold null": lambda m: m["selective"].update(threshold=None),
    "ood.threshold 1e9": lambda m: m["ood"].update(threshold=1e9),
    "temperature 3": lambda m: m["calibration"].update(temperature=3.0),
    "descriptions swapped": lambda m: m.update(descriptions=dict(zip(m["descriptions"], reversed(m["descriptions"].values())))),
}
#: edits whose value is invalid whatever the seal says: refused by a check of its own
INVALID = {"mean 1e30", "NaN in mean", "interpolation lanczos9", "clahe true", "clahe_grid 100000", "image_size 64",
           "image_size null", "selective.probabilities banana"}


@pytest.mark.probe("bundles")
@pytest.mark.parametrize("edit", list(EDITS))
def test_an_edited_bundle_json_is_refused_by_its_seal(unit_bundle, tmp_path, edit):
    bundle = _copy(unit_bundle, tmp_path)
    manifest = json.loads((bundle / "bundle.json").read_text())
    EDITS[edit](manifest)
    _write(bundle, manifest, reseal=False)
    with pytest.raises(ValueError) as info:
        load_bundle(bundle, runtime="onnx")
    message = str(info.value)
    assert "\n" not in message and "bundle.json" in message, message
    if edit not in INVALID:  # a valid-looking value: the seal is what refuses it
        assert "sha256 differs from bundle.json.sha256" in message, message


@pytest.mark.probe("bundles")
@pytest.mark.parametrize("edit", sorted(INVALID))
def test_an_invalid_value_is_refused_even_with_a_remade_seal(unit_bundle, tmp_path, edit):
    bundle = _copy(unit_bundle, tmp_path)
    manifest = json.loads((bundle / "bundle.json").read_text())
    EDITS[edit](manifest)
    _write(bundle, manifest, reseal=True)
    with pytest.raises(ValueError) as info:  # at load: serve and predict never start with it
        load_bundle(bundle, runtime="onnx")
    message = str(info.value)
    assert "\n" not in message and str(bundle) in message, message


def _rehash(bundle: Path, rel: str) -> None:
    manifest = json.loads((bundle / "bundle.json").read_text())
    manifest["files"][rel] = file_sha256(bundle / rel)
    _write(bundle, manifest, reseal=True)


@pytest.mark.probe("bundles")
@pytest.mark.parametrize("damage", ["truncated features.onnx", "truncated ood.safetensors",
                                    "features.onnx unlisted", "features.onnx a link to /etc/passwd"])
def test_a_broken_bundle_never_starts(unit_bundle, tmp_path, damage):
    bundle = _copy(unit_bundle, tmp_path)
    manifest = json.loads((bundle / "bundle.json").read_text())
    features = next(k for k in manifest["files"] if k.endswith("features.onnx"))
    if damage.startswith("truncated"):
        rel = features if "features" in damage else "ood.safetensors"
        data = (bundle / rel).read_bytes()
        (bundle / rel).write_bytes(data[: len(data) // 3])
        _rehash(bundle, rel)  # the hash updated: only loading the file at start finds it
    else:
        manifest["files"].pop(features)
        if "link" in damage:
            (bundle / features).unlink()
            (bundle / features).symlink_to("/etc/passwd")
        _write(bundle, manifest, reseal=True)
    with pytest.raises(ValueError) as info:
        load_bundle(bundle, runtime="onnx")
    assert "\n" not in str(info.value)


@pytest.mark.probe("bundles")
def test_a_100000_deep_bundle_json_is_refused_in_one_line(unit_bundle, tmp_path):
    bundle = _copy(unit_bundle, tmp_path)
    deep = "[" * 100_000 + "]" * 100_000
    (bundle / "bundle.json").write_text('{"format": "allwen-bundle", "x": ' + deep + "}")
    seal(BundleFolder(bundle))
    with pytest.raises(ValueError) as info:
        load_bundle(bundle, runtime="onnx")
    assert "\n" not in str(info.value) and "RecursionError" not in str(info.value)
