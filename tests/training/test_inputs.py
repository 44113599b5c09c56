"""The decoded-image route gives the same numbers as decoding every image every epoch."""

import numpy as np
import pytest
import torch

from allwen.config.schema import DataConfig
from allwen.data import load_source
from allwen.data.transforms import build_transform, dihedral_view, load_rgb
from allwen.training.inputs import BatchPrep, DecodedImages, ImageRows, ViewSampler, resolve_workers

NORM = {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225], "interpolation": "bicubic"}


@pytest.fixture(scope="module")
def images(synth_root):
    table = load_source(synth_root / "training_data")
    return list(table.frame.path[:12]), list(table.frame.sha256[:12])


@pytest.mark.parametrize("clahe", [False, True])
def test_decoded_store_gives_the_pil_path_numbers(images, tmp_path, clahe):
    paths, hashes = images
    data = DataConfig(image_size=24, clahe=clahe, augment="flips_color")  # 32 px files, resized
    store = DecodedImages(tmp_path, data, NORM)
    assert store.ensure(paths, hashes) == len(set(hashes))
    assert DecodedImages(tmp_path, data, NORM).ensure(paths, hashes) == 0  # decoded once per run
    stored = ImageRows(np.zeros(len(paths)), stored=store.source(hashes))
    batch = torch.stack([stored[i][0] for i in range(len(paths))])
    assert batch.dtype == torch.uint8 and batch.shape == (len(paths), 3, 24, 24)
    today = torch.stack([build_transform(data, NORM, train=False)(load_rgb(p)) for p in paths])
    assert torch.equal(BatchPrep(data, NORM, augment=False)(batch), today)  # exactly the same numbers
    # v2's per-image augmentation: the same random draws give the same images (the batched one,
    # the default, draws otherwise from the same distributions: tests/data/test_batch_augment.py)
    prep = BatchPrep(data, NORM, augment=True, batched=False)
    for i, path in enumerate(paths[:4]):
        torch.manual_seed(i)
        ours = prep(batch[i:i + 1])[0]
        torch.manual_seed(i)
        assert torch.equal(ours, build_transform(data, NORM, train=True)(load_rgb(path)))


def test_store_needs_a_fixed_size_and_can_be_turned_off():
    assert not DecodedImages.usable(DataConfig(image_size=None))
    assert not DecodedImages.usable(DataConfig(decode_cache=False))
    with pytest.raises(ValueError, match="image_size"):
        DecodedImages("unused", DataConfig(image_size=None), NORM)


def test_dihedral_views_are_the_eight_symmetries_and_the_sampler_is_seeded():
    image = torch.arange(9, dtype=torch.uint8).reshape(1, 3, 3).expand(3, 3, 3)
    views = {tuple(dihedral_view(image, v).flatten().tolist()) for v in range(8)}
    assert len(views) == 8
    a, b = list(ViewSampler(20, seed=3, views=8)), list(ViewSampler(20, seed=3, views=8))
    assert a == b and sorted(i for i, _ in a) == list(range(20)) and {v for _, v in a} <= set(range(8))
    assert list(ViewSampler(5, seed=0)) == torch.randperm(5, generator=torch.Generator().manual_seed(0)).tolist()


def test_num_workers_auto_is_the_thread_budget_minus_one(monkeypatch):
    monkeypatch.setenv("ALLWEN_THREADS", "8")
    assert resolve_workers("auto") == 7 and resolve_workers(0) == 0
    monkeypatch.setenv("ALLWEN_THREADS", "1")
    assert resolve_workers("auto") == 0


def test_batch_prep_gives_channels_last_for_the_gpu():
    batch = torch.randint(0, 255, (2, 3, 8, 8), dtype=torch.uint8)
    out = BatchPrep(DataConfig(image_size=8), NORM, augment=False, channels_last=True)(batch)
    assert out.is_contiguous(memory_format=torch.channels_last) and out.dtype == torch.float32
