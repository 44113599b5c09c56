"""Backbones by timm name: weights from hub, none or a local safetensors file."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import huggingface_hub.constants
import pytest
import timm
import torch
from safetensors.torch import save_file

from allwen.models import (
    KNOWN_BACKBONES,
    WeightsUnavailableError,
    backbone_data_config,
    create_backbone,
)


def _save(model: torch.nn.Module, path: Path) -> Path:
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return path


def test_known_backbones_are_timm_models() -> None:
    assert all(timm.is_model(name) for name in KNOWN_BACKBONES)


def test_random_init_gives_pooled_features() -> None:
    backbone = create_backbone("test_efficientnet", "none").eval()
    assert backbone(torch.randn(2, 3, 32, 32)).shape == (2, backbone.num_features)


def test_unknown_name_lists_close_matches() -> None:
    with pytest.raises(ValueError, match="efficientnet_b0") as info:
        create_backbone("efficientnet_bO", "none")
    assert "unknown backbone" in str(info.value)


def test_offline_hub_gives_actionable_error(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # huggingface_hub reads HF_HUB_OFFLINE at import time; make sure, and use an empty cache
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))
    with pytest.raises(WeightsUnavailableError) as info:
        create_backbone("efficientnet_b0", "hub")
    message = str(info.value)
    assert "the model hub cannot be used (HF_HUB_OFFLINE is set)" in message
    assert "timm/efficientnet_b0.ra_in1k" in message
    assert "--set model.weights=/path/to/file.safetensors" in message
    assert "model.weights: none" in message
    assert info.value.__suppress_context__ and info.value.__cause__ is None


@pytest.mark.parametrize("suffix", [".pth", ".pt", ".bin"])
def test_pickle_paths_are_refused(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"weights{suffix}"
    path.write_bytes(b"not used")
    with pytest.raises(ValueError, match="never unpickles.*safetensors"):
        create_backbone("test_efficientnet", str(path))


def test_missing_file_and_bad_keyword_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="does not exist"):
        create_backbone("test_efficientnet", str(tmp_path / "absent.safetensors"))
    with pytest.raises(ValueError, match="'hub', 'none'"):
        create_backbone("test_efficientnet", "imagenet")


def test_pickle_renamed_safetensors_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "weights.safetensors"
    torch.save({"a": torch.zeros(2)}, path)
    with pytest.raises(ValueError, match="not a valid safetensors"):
        create_backbone("test_efficientnet", str(path))


@pytest.mark.parametrize("num_classes", [1000, 0])
def test_local_file_with_or_without_classifier(tmp_path: Path, num_classes: int) -> None:
    torch.manual_seed(3)
    source = timm.create_model("test_efficientnet", pretrained=False, num_classes=num_classes)
    path = _save(source, tmp_path / "w.safetensors")
    backbone = create_backbone("test_efficientnet", path)
    for key, value in backbone.state_dict().items():
        assert torch.equal(value, source.state_dict()[key]), key


def test_file_of_another_architecture_is_refused(tmp_path: Path) -> None:
    other = timm.create_model("test_resnet", pretrained=False, num_classes=0)
    path = _save(other, tmp_path / "resnet.safetensors")
    with pytest.raises(ValueError, match="test_efficientnet"):
        create_backbone("test_efficientnet", path)


def test_shared_mobilenetv2_weights_load_offline(shared: Callable[..., Path]) -> None:
    path = shared("weights", "mobilenetv2_100", "mobilenetv2_100.safetensors")
    pretrained = create_backbone("mobilenetv2_100", path).eval()
    torch.manual_seed(0)
    random = create_backbone("mobilenetv2_100", "none").eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        a, b = pretrained(x), random(x)
    assert a.shape == b.shape == (2, 1280)
    assert not torch.allclose(a, b)


def test_data_config_is_json_ready() -> None:
    config = backbone_data_config(create_backbone("test_efficientnet", "none"))
    assert json.loads(json.dumps(config)) == config
    assert len(config["mean"]) == 3 and len(config["std"]) == 3
    assert config["input_size"][0] == 3
    assert {"interpolation", "crop_pct"} <= config.keys()


def test_pretrained_tag_chooses_the_timm_configuration() -> None:
    """The tag is timm's ``arch.tag``: recorded in ``pretrained_cfg``; a tag the architecture
    lacks is one line naming the known ones; the default is timm's first tag."""
    from allwen.models import resolve_pretrained_tag, timm_name

    assert timm_name("tf_efficientnetv2_m", "in1k") == "tf_efficientnetv2_m.in1k"
    assert timm_name("tf_efficientnetv2_m.in21k", "in1k") == "tf_efficientnetv2_m.in1k"
    assert resolve_pretrained_tag("tf_efficientnetv2_s") == "in21k_ft_in1k"  # timm's default: ImageNet-21k
    assert resolve_pretrained_tag("tf_efficientnetv2_s.in1k") == "in1k"
    model = create_backbone("test_efficientnet", "none", "r160_in1k")
    assert model.pretrained_cfg["tag"] == "r160_in1k"
    with pytest.raises(ValueError, match="no pretrained tag 'in21k'; known: test_efficientnet.r160_in1k"):
        create_backbone("test_efficientnet", "none", "in21k")
    # the tag chooses the preprocessing too: V2's in1k weights want [-1, 1] inputs, as Keras's
    v2 = create_backbone("tf_efficientnetv2_s", "none", "in1k")
    assert backbone_data_config(v2)["mean"] == [0.5, 0.5, 0.5]


def test_hub_weights_are_asked_for_by_their_tag(monkeypatch: pytest.MonkeyPatch) -> None:
    """``weights: hub`` downloads the tagged weights (timm's ``arch.tag``); the hub is not reachable
    here, so the call timm would make is recorded instead of made."""
    import allwen.models.backbones as backbones

    calls, real = [], timm.create_model

    def fake_create(name, pretrained=False, **kwargs):
        calls.append((name, pretrained))
        return real("test_efficientnet", pretrained=False, **kwargs)

    monkeypatch.setattr(backbones.timm, "create_model", fake_create)
    from allwen.models import hub

    monkeypatch.setattr(hub, "cached_file", lambda hub_id: None)
    monkeypatch.setattr(hub, "unavailable", lambda: None)  # as if the hub answered the one check
    create_backbone("tf_efficientnetv2_m", "hub", "in1k")
    assert calls == [("tf_efficientnetv2_m.in1k", True)]


def test_shared_weights_file_with_a_tag(shared: Callable[..., Path]) -> None:
    """A weights file is loaded under the named tag's configuration (here ImageNet mean/std)."""
    path = shared("weights", "mobilenetv2_100", "mobilenetv2_100.safetensors")
    model = create_backbone("mobilenetv2_100", path, "ra_in1k")
    assert model.pretrained_cfg["tag"] == "ra_in1k" and model.pretrained_cfg["file"] == str(path)
    assert backbone_data_config(model)["mean"] == pytest.approx([0.485, 0.456, 0.406])
