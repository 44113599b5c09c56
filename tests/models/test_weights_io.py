"""safetensors checkpoints: round trips across frozen/unfrozen models, metadata, refusals."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from allwen.config.schema import ModelConfig
from allwen.models import (
    ClassifierModel,
    build_classifier,
    freeze_backbone,
    load_weights,
    read_metadata,
    save_weights,
    unfreeze_top,
)


def _model(seed: int, head: str = "softmax", num_classes: int = 3) -> ClassifierModel:
    torch.manual_seed(seed)
    cfg = ModelConfig(backbone="test_efficientnet", weights="none", head=head)
    return build_classifier(cfg, num_classes)


def _perturb_stats(model: ClassifierModel) -> None:
    """Non-default running statistics, so a round trip that dropped them would show."""
    with torch.no_grad():
        for name, buffer in model.named_buffers():
            if name.endswith("running_mean"):
                buffer.uniform_(-0.5, 0.5)


def _assert_same_values(a: ClassifierModel, b: ClassifierModel) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    common = [k for k in sa if not k.endswith("num_batches_tracked")]
    assert common and all(k in sb for k in common)
    for key in common:
        assert torch.equal(sa[key], sb[key]), key


@pytest.mark.parametrize("direction", ["frozen_to_fresh", "fresh_to_frozen"])
def test_round_trip_across_frozen_and_fresh(tmp_path: Path, direction: str) -> None:
    source, target = _model(0), _model(1)
    _perturb_stats(source)
    frozen = source if direction == "frozen_to_fresh" else target
    freeze_backbone(frozen)
    unfreeze_top(frozen, 0.3)  # partly frozen: some BN without num_batches_tracked
    path = save_weights(source, tmp_path / "ckpt" / "model.safetensors", {"epoch": 3})
    assert load_weights(target, path) == {"epoch": 3}
    _assert_same_values(source, target)
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(source.eval()(x), target.eval()(x), atol=1e-5, rtol=1e-4)


def test_metadata_round_trip_and_atomic_write(tmp_path: Path) -> None:
    metadata = {
        "backbone": "test_efficientnet",
        "classes": ["all", "hem"],
        "num_classes": 2,
        "lr": 1e-3,
        "data_config": {"mean": [0.5, 0.5, 0.5], "input_size": [3, 32, 32]},
        "note": None,
    }
    path = tmp_path / "m.safetensors"
    save_weights(_model(0), path, metadata)
    save_weights(_model(0), path, metadata)  # overwriting is fine
    assert read_metadata(path) == metadata
    assert [p.name for p in tmp_path.iterdir()] == ["m.safetensors"]  # no temp files left


def test_pickle_renamed_safetensors_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "evil.safetensors"
    torch.save(_model(0).state_dict(), path)
    with pytest.raises(ValueError, match="evil.safetensors.*not a valid safetensors"):
        load_weights(_model(0), path)
    with pytest.raises(ValueError, match="not a valid safetensors"):
        read_metadata(path)


def test_non_safetensors_suffix_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="safetensors"):
        save_weights(_model(0), tmp_path / "model.pt", {})
    path = tmp_path / "model.pth"
    path.write_bytes(b"x")
    with pytest.raises(ValueError, match="arbitrary code"):
        load_weights(_model(0), path)


def test_one_safetensors_check_for_checkpoints_and_model_weights(tmp_path: Path) -> None:
    """``model.weights`` and a checkpoint are refused by the same check: the file named, how to convert it."""
    from allwen.models.backbones import create_backbone

    path = tmp_path / "model.pth"
    path.write_bytes(b"x")
    with pytest.raises(ValueError) as loading:
        load_weights(_model(0), path)
    with pytest.raises(ValueError) as building:
        create_backbone("test_efficientnet", str(path))
    tail = "a path to a .safetensors file. allwen never unpickles a checkpoint"
    assert str(loading.value).startswith(f"{path}: expected {tail}")
    assert str(building.value).startswith(f"model.weights={str(path)!r}: expected 'hub', 'none' or {tail}")
    assert str(loading.value).split(tail)[1] == str(building.value).split(tail)[1]
    assert "save_file(" in str(loading.value)


def test_mismatching_checkpoint_lists_keys_and_leaves_model_untouched(tmp_path: Path) -> None:
    path = save_weights(_model(0, head="mlp128"), tmp_path / "mlp.safetensors", {})
    target = _model(1)
    before = {k: v.clone() for k, v in target.state_dict().items()}
    expected = r"missing keys \['head\.1\.bias'.*unexpected keys \['head\.0"
    with pytest.raises(ValueError, match=expected):
        load_weights(target, path)
    assert all(torch.equal(before[k], v) for k, v in target.state_dict().items())
    other_k = save_weights(_model(0, num_classes=4), tmp_path / "k4.safetensors", {})
    with pytest.raises(ValueError, match="shapes differ"):
        load_weights(target, other_k)
