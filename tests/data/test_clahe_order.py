"""data.clahe.order: CLAHE before the resize (allwen's default) or after it (Experiment C's paper),
with the LAB-lightness and black-background choices as named options."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from allwen.config import load_config
from allwen.config.schema import ClaheConfig, DataConfig
from allwen.data.clahe import clahe_rgb
from allwen.data.transforms import decode_transform
from allwen.bundle import Preprocessing
from allwen.serve.preprocess import preprocess
from allwen.training.inputs import decode_key

NORM = {"interpolation": "bilinear", "mean": [0.0, 0.0, 0.0], "std": [1.0, 1.0, 1.0]}


def _cell(size: int = 96) -> Image.Image:
    """A textured disc on black: a segmented cell."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:size, :size]
    disc = (yy - size / 2) ** 2 + (xx - size / 2) ** 2 < (size / 3) ** 2
    rgb = np.zeros((size, size, 3), np.uint8)
    rgb[disc] = (rng.integers(90, 140, size=(disc.sum(), 3))).astype(np.uint8)
    return Image.fromarray(rgb)


def _resize(image: Image.Image | np.ndarray, size: int) -> np.ndarray:
    from torchvision.transforms import v2

    tensor = v2.functional.to_image(image if isinstance(image, Image.Image) else Image.fromarray(image))
    out = v2.Resize((size, size), antialias=True)(tensor)
    return out.permute(1, 2, 0).numpy()


@pytest.mark.parametrize("order", ["before_resize", "after_resize"])
def test_decode_applies_clahe_in_the_configured_order(order):
    image = _cell()
    data = DataConfig(image_size=32, clahe={"order": order})
    out = decode_transform(data, NORM)(image).permute(1, 2, 0).numpy()
    if order == "before_resize":
        expected = _resize(clahe_rgb(np.asarray(image)), 32)
    else:
        expected = clahe_rgb(_resize(image, 32))
    np.testing.assert_array_equal(out, expected)
    other = clahe_rgb(_resize(image, 32)) if order == "before_resize" else _resize(clahe_rgb(np.asarray(image)), 32)
    assert not np.array_equal(out, other)  # the order changes the pixels


def test_true_means_todays_defaults_and_keeps_the_cache_keys():
    assert DataConfig(clahe=True).clahe_options == ClaheConfig()
    assert DataConfig(clahe=True).clahe_record() is True
    assert decode_key(DataConfig(clahe=True), NORM) == decode_key(DataConfig(clahe={}), NORM)
    assert decode_key(DataConfig(clahe={"order": "after_resize"}), NORM) != decode_key(DataConfig(clahe=True), NORM)
    assert DataConfig(clahe=False).clahe_options is None


def test_channel_and_background_options():
    rgb = np.asarray(_cell())
    lifted = clahe_rgb(rgb, keep_black=False)
    kept = clahe_rgb(rgb)
    black = ~rgb.any(axis=2)
    assert (kept[black] == 0).all() and lifted[black].max() > 0  # equalise lifts the background
    per_channel = clahe_rgb(rgb, channel="rgb")
    assert not np.array_equal(per_channel, kept)
    with pytest.raises(ValueError, match="data.clahe.channel"):
        clahe_rgb(rgb, channel="hsv")


def test_experiment_c_states_its_clahe():
    for preset in ("experiment_c", "experiment_c_as_run"):
        options = load_config(preset).data.clahe_options
        assert options == ClaheConfig(order="after_resize", channel="lab_lightness", background="keep_black")


@pytest.mark.parametrize("order", ["before_resize", "after_resize"])
def test_serves_numpy_preprocessing_follows_the_order(order):
    image = _cell()
    data = DataConfig(image_size=32, clahe={"order": order})
    torch_side = decode_transform(data, NORM)(image).to(torch.float32).numpy() / 255.0
    served = preprocess(image, Preprocessing.of(data, NORM))
    # PIL's and torchvision's resizes may differ by a grey level or two
    assert np.abs(served - torch_side).max() <= 3 / 255 + 1e-6
    swapped = {"order": "before_resize" if order == "after_resize" else "after_resize"}
    other = Preprocessing.of(DataConfig(image_size=32, clahe=swapped), NORM)
    assert np.abs(preprocess(image, other) - torch_side).max() > 20 / 255
