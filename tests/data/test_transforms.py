import numpy as np
import pytest
import torch
from PIL import Image

from allwen.config.schema import DataConfig
from allwen.data.transforms import AUGMENTATIONS, ImageDataset, build_transform, clahe_rgb
from allwen.models import backbone_data_config, create_backbone


def _cell(size=48, seed=0) -> Image.Image:
    rng = np.random.default_rng(seed)
    arr = np.zeros((size, size, 3), np.uint8)
    arr[size // 4: 3 * size // 4, size // 4: 3 * size // 4] = rng.integers(60, 120, (size // 2, size // 2, 3))
    return Image.fromarray(arr)


def test_normalisation_comes_from_the_backbone_config():
    norm = backbone_data_config(create_backbone("test_efficientnet", "none"))
    tf = build_transform(DataConfig(image_size=16, augment="none"), norm, train=False)
    out = tf(Image.new("RGB", (16, 16), (255, 0, 128)))
    expected = (torch.tensor([1.0, 0.0, 128 / 255]) - torch.tensor(norm["mean"])) / torch.tensor(norm["std"])
    assert out.shape == (3, 16, 16)
    assert torch.allclose(out[:, 0, 0], expected, atol=1e-5)
    other = {"mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5]}
    assert torch.allclose(build_transform(DataConfig(image_size=16), other, train=False)(Image.new("RGB", (16, 16)))[:, 0, 0],
                          torch.tensor([-1.0, -1.0, -1.0]))


def test_resize_or_native_size():
    norm = {"mean": [0, 0, 0], "std": [1, 1, 1]}
    assert build_transform(DataConfig(image_size=24), norm, train=False)(_cell(48)).shape == (3, 24, 24)
    assert build_transform(DataConfig(image_size=None), norm, train=False)(_cell(48)).shape == (3, 48, 48)


def test_clahe_raises_local_contrast_and_keeps_black_background():
    img = np.asarray(_cell(64))
    out = clahe_rgb(img)
    assert out.shape == img.shape and out.dtype == np.uint8
    inside = (slice(16, 48), slice(16, 48))
    assert out[inside].std() > img[inside].std()
    assert out[:8, :8].max() == 0  # the segmented black background stays black
    with pytest.raises(ValueError, match="uint8"):
        clahe_rgb(img.astype(np.float32))
    tf = build_transform(DataConfig(image_size=None, clahe=True, augment="none"), {"mean": [0] * 3, "std": [1] * 3}, train=False)
    assert torch.allclose(tf(_cell(64)), torch.from_numpy(out).permute(2, 0, 1).float() / 255, atol=1e-6)


@pytest.mark.parametrize("name", ["flips_color", "crop_rotate_flip_shift"])
def test_augmentations_change_training_images_only(name):
    norm = {"mean": [0, 0, 0], "std": [1, 1, 1]}
    cfg = DataConfig(image_size=32, augment=name)
    torch.manual_seed(0)
    train_tf, eval_tf = build_transform(cfg, norm, train=True), build_transform(cfg, norm, train=False)
    img = _cell(48)
    assert torch.equal(eval_tf(img), eval_tf(img))  # evaluation is deterministic
    outs = [train_tf(img) for _ in range(6)]
    assert all(o.shape == (3, 32, 32) for o in outs)
    assert any(not torch.equal(outs[0], o) for o in outs[1:])
    assert set(AUGMENTATIONS) == {"none", "flips_color", "crop_rotate_flip_shift", "dihedral"}


def test_dataset_names_the_unreadable_file(tmp_path):
    bad = tmp_path / "bad.bmp"
    bad.write_text("not an image")
    ds = ImageDataset([str(bad)], np.array([0]), build_transform(DataConfig(image_size=8), {"mean": [0] * 3, "std": [1] * 3}, False))
    with pytest.raises(ValueError, match="bad.bmp"):
        ds[0]
