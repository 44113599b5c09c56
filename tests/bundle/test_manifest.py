"""bundle.json is one strict typed record: every value range- and type-checked, unknown keys refused, one line."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest

from allwen.bundle import Preprocessing, manifest_from_bytes
from allwen.bundle.manifest import MAX_JSON_DEPTH, MAX_MANIFEST_BYTES, OOD_METHODS
from allwen.export.sections import AbstainSettings, fit_conformal, fit_patient, fit_selective


def _probs(seed, n, k=2, strength=2.0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, k, n)
    logits = rng.normal(size=(n, k))
    logits[np.arange(n), y] += strength
    return y, np.exp(logits) / np.exp(logits).sum(1, keepdims=True)


def _whole_manifest(**sections) -> dict:
    """A valid bundle.json around ``sections`` (one member; hashes that are never checked here)."""
    member = {"name": "u/fold_0", "weight": 1.0, "folder": "members/00_u_fold_0", "backbone": "b", "head": "softmax",
              "activation": "native", "dropout": 0.0,
              "data": {"image_size": 32, "clahe": False, "clahe_clip": 2.0, "clahe_grid": 8},
              "data_config": {"interpolation": "bilinear", "mean": [0.5] * 3, "std": [0.5] * 3}}
    files = {f"{member['folder']}/{f}": "0" * 64 for f in ("weights.safetensors", "data_config.json")}
    return {"format": "allwen-bundle", "format_version": 1, "name": "u/fold_0", "kind": "unit", "weighting": "single",
            "classes": ["hem", "all"], "members": [member], "calibration": {"method": "temperature", "temperature": 1.0},
            "card": {"run": "r", "intended_use": "research", "limits": [], "data": {}, "split": {}},
            "input": {"description": "d", "color": "RGB", "image_size": 32, "tensor": "t", "output": "o"},
            "versions": {}, "created": "now", "files": {**files, "ood.safetensors": "0" * 64}, **sections}


def _validate(manifest: dict) -> None:
    import json

    manifest_from_bytes(json.dumps(manifest).encode(), "b/bundle.json")


def test_sections_are_validated_with_one_line_naming_the_field():
    vy, vp = _probs(0, 200)
    s = AbstainSettings(n_boot=20)
    sel, _ = fit_selective(vy, vp, None, None, s)
    conf, _ = fit_conformal(vy, vp, ["hem", "all"], s)
    good = _whole_manifest(selective=sel, conformal=conf, patient=fit_patient(None, vy, vp, ["hem", "all"]),
                           ood={"method": "knn", "file": "ood.safetensors", "threshold": 0.3, "member_index": 0,
                                "quantile": 0.95, "feature_dim": 8})
    _validate(good)
    cases = [
        (("selective", "threshold"), 1.5, "selective.threshold"),
        (("selective", "target_accuracy"), 0, "selective.target_accuracy"),
        (("selective", "probabilities"), "hot", "selective.probabilities"),
        (("selective", "surprise"), 1, "selective.surprise"),  # strict: an unknown key is refused
        (("ood", "threshold"), float("nan"), "ood.threshold"),
        (("ood", "method"), "magic", "ood.method"),
        (("ood", "member_index"), 3, "member_index"),
        (("ood", "file"), "other.safetensors", "not listed in files"),
        (("patient", "positive_classes"), ["blast"], "positive_classes"),
    ]
    import copy

    for (section, key), value, message in cases:
        bad = copy.deepcopy(good)
        bad[section][key] = value
        with pytest.raises(ValueError, match=message.replace(".", r"\.")) as info:
            _validate(bad)
        assert str(info.value).startswith("b/bundle.json: field ") and "\n" not in str(info.value)
    bad = copy.deepcopy(good)
    bad["conformal"]["levels"][0]["threshold"] = {"hem": 0.2}
    with pytest.raises(ValueError, match="thresholds for"):
        _validate(bad)
    bad = copy.deepcopy(good)
    bad["conformal"]["levels"][0]["threshold"]["all"] = -0.1
    with pytest.raises(ValueError, match="conformal.levels.0.threshold"):
        _validate(bad)


def test_the_written_form_is_the_read_form():
    good = _whole_manifest()
    assert manifest_from_bytes(json.dumps(good).encode(), "b/bundle.json").as_json() == good


@pytest.mark.parametrize("where,value,field,reason", [
    (("surprise",), 1, "field surprise", "Extra inputs are not permitted"),
    (("members", 0, "data", "image_size"), 100_000, "members.0.data.image_size", "less than or equal to 4096"),
    (("members", 0, "data", "clahe_grid"), 1000, "members.0.data.clahe_grid", "less than or equal to 64"),
    (("members", 0, "data_config", "interpolation"), "lanczos9", "members.0.data_config.interpolation", "bilinear"),
    (("members", 0, "data_config", "std"), [0.5, 0.0, 0.5], "members.0.data_config.std", "> 0"),
    (("members", 0, "data_config", "mean"), [0.5, float("nan"), 0.5], "members.0.data_config.mean", "finite"),
    (("members", 0, "data_config", "mean"), [0.5, 0.5], "members.0.data_config.mean.2", "Field required"),
    (("members", 0, "folder"), "../elsewhere", "members.0.folder", "inside the bundle"),
    (("weighting",), "magic", "field weighting", "choose from"),
    (("calibration", "default"), "maybe", "calibration.default", "calibrated"),
    (("kind",), "forest", "field kind", "unit"),
])
def test_every_value_is_range_and_type_checked(where, value, field, reason):
    bad = _whole_manifest()
    target = bad
    for key in where[:-1]:
        target = target[key]
    target[where[-1]] = value
    with pytest.raises(ValueError) as info:
        manifest_from_bytes(json.dumps(bad).encode(), "b/bundle.json")
    message = str(info.value)
    assert field in message and reason in message and "\n" not in message, message


def test_json_too_deep_or_too_large_is_refused_before_validation():
    deep = _whole_manifest()
    node = deep["card"]["data"]
    for _ in range(MAX_JSON_DEPTH + 2):
        node["x"] = {}
        node = node["x"]
    with pytest.raises(ValueError, match="nested deeper"):
        manifest_from_bytes(json.dumps(deep).encode(), "b/bundle.json")
    with pytest.raises(ValueError, match="more than a bundle manifest can be"):
        manifest_from_bytes(b" " * (MAX_MANIFEST_BYTES + 1), "b/bundle.json")
    with pytest.raises(ValueError, match="not valid JSON"):
        manifest_from_bytes(b"[" * 100_000, "b/bundle.json")


def test_preprocessing_is_one_record_split_into_bundle_json_sections_and_joined_back():
    from allwen.config.schema import DataConfig

    data = DataConfig(image_size=32, clahe=True, clahe_clip=3.0, clahe_grid=4)
    norm = {"input_size": [3, 224, 224], "interpolation": "bicubic", "mean": [0.485, 0.456, 0.406],
            "std": [0.229, 0.224, 0.225], "crop_pct": 0.875, "crop_mode": "center"}
    pre = Preprocessing.of(data, norm)
    assert Preprocessing.join(pre.data_steps(), pre.normalisation()) == pre
    assert pre.data_steps().model_dump() == {"image_size": 32, "clahe": True, "clahe_clip": 3.0, "clahe_grid": 4}
    assert pre.normalisation().model_dump(mode="json", exclude_unset=True) == norm
    assert Preprocessing.model_validate(pre.metadata()) == pre


def test_ood_methods_are_the_evaluation_registry():
    from allwen.evaluation.ood import OOD_METHODS as REGISTRY

    assert set(OOD_METHODS) == set(REGISTRY)
