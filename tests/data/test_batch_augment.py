"""Batched augmentation draws from the same distributions as torchvision v2's per-image loop."""

import pytest
import torch
from scipy.stats import ks_2samp

from allwen.config.schema import DataConfig
from allwen.data.batch_augment import BATCH_AUGMENTATIONS
from allwen.data.transforms import augment_transform
from allwen.training.inputs import BatchPrep

S = 16
NORM = {"mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]}


def _image() -> torch.Tensor:
    """An asymmetric uint8 test card: gradients per channel and a bright top-left corner, so
    flips, shifts, rotations and colour changes all move some statistic."""
    yy, xx = torch.meshgrid(torch.arange(S), torch.arange(S), indexing="ij")
    img = torch.stack([xx * 15, yy * 9 + 40, (xx + yy) * 6 + 20]).clamp(0, 255).to(torch.uint8)
    img[:, : S // 4, : S // 4] = 255
    return img


def _statistics(batch: torch.Tensor) -> dict[str, torch.Tensor]:
    b = batch.float()
    mass = b.sum((1, 2, 3)).clamp_min(1)
    pos = torch.arange(S, dtype=torch.float32)
    return {
        "mean": b.mean((1, 2, 3)), "std": b.std((1, 2, 3)),
        "centre_x": (b.sum((1, 2)) * pos).sum(1) / mass, "centre_y": (b.sum((1, 3)) * pos).sum(1) / mass,
        "black": (b.sum(1) == 0).float().mean((1, 2)), "top_left": b[:, :, : S // 2, : S // 2].mean((1, 2, 3)),
        "red_minus_blue": (b[:, 0] - b[:, 2]).mean((1, 2)),
    }


def _per_image(name: str, n: int) -> torch.Tensor:
    aug = augment_transform(DataConfig(image_size=S, augment=name))
    img = _image()
    return torch.stack([aug(img) for _ in range(n)])


def _batched(name: str, n: int) -> torch.Tensor:
    return BATCH_AUGMENTATIONS[name](_image().float()[None].repeat(n, 1, 1, 1))


def _worst_p(a: torch.Tensor, b: torch.Tensor) -> tuple[float, str]:
    sa, sb = _statistics(a), _statistics(b)
    return min((ks_2samp(sa[k].numpy(), sb[k].numpy()).pvalue, k) for k in sa)


@pytest.mark.parametrize("name", sorted(BATCH_AUGMENTATIONS))
def test_batched_augmentation_has_the_per_image_distribution(name):
    torch.manual_seed(0)
    reference = _per_image(name, 300)
    torch.manual_seed(1)
    batched = _batched(name, 300)
    p, statistic = _worst_p(reference, batched)
    assert p > 1e-3, f"{name}: {statistic} distributed differently (KS p={p:.2g})"


def test_the_comparison_detects_another_distribution():
    torch.manual_seed(0)
    reference = _per_image("flips_color", 300)
    torch.manual_seed(1)
    brighter = BATCH_AUGMENTATIONS["flips_color"]((_image().float() * 1.15).clamp(0, 255)[None].repeat(300, 1, 1, 1))
    assert _worst_p(reference, brighter)[0] < 1e-3
    no_flips = _image()[None].repeat(300, 1, 1, 1)
    assert _worst_p(reference, no_flips)[0] < 1e-3


def test_each_image_of_a_batch_gets_its_own_draw():
    torch.manual_seed(0)
    batch = _image()[None].repeat(32, 1, 1, 1)
    for name in BATCH_AUGMENTATIONS:
        out = BatchPrep(DataConfig(image_size=S, augment=name), NORM, augment=True)(batch)
        distinct = {tuple(x.flatten()[:64].tolist()) for x in out}
        assert len(distinct) > 8, name
        assert out.dtype == torch.float32 and out.shape == (32, 3, S, S)


def test_without_augmentation_the_numbers_are_unchanged():
    batch = _image()[None].repeat(4, 1, 1, 1)
    data = DataConfig(image_size=S, augment="flips_color")
    plain = BatchPrep(data, NORM, augment=False)(batch)
    expected = (batch.float() / 255 - 0.5) / 0.25
    assert torch.allclose(plain, expected, atol=1e-6)


def test_the_lookup_table_path_gives_the_tensor_paths_numbers():
    """CPU uint8 batches take flips_color_normalised (one table lookup per pixel): the same
    draws must give flips_color's images, normalised, to float rounding."""
    from allwen.data.batch_augment import flips_color, flips_color_normalised

    generator = torch.Generator().manual_seed(3)
    batch = torch.randint(0, 256, (64, 3, S, S), dtype=torch.uint8, generator=generator)
    batch[:8] = _image()  # and the test card, with its saturated corner
    mean, std = torch.tensor([0.485, 0.456, 0.406]), torch.tensor([0.229, 0.224, 0.225])
    torch.manual_seed(5)
    tables = flips_color_normalised(batch, mean, std)
    torch.manual_seed(5)
    tensors = (flips_color(batch.float()) / 255 - mean.view(1, 3, 1, 1)) / std.view(1, 3, 1, 1)
    level = 1 / (255 * float(std.min()))
    differ = (tables - tensors).abs()
    assert float(differ.max()) <= level + 1e-5  # at most one uint8 level, where the mean grey rounds the other way
    assert float((differ > 1e-5).float().mean()) < 1e-3
    assert tables.dtype == torch.float32 and tables.shape == batch.shape
    assert torch.equal(batch[:8], _image()[None].repeat(8, 1, 1, 1))  # the input is left as it was


def test_batch_prep_takes_the_lookup_tables_on_cpu_uint8_and_keeps_the_distribution():
    data = DataConfig(image_size=S, augment="flips_color")
    prep = BatchPrep(data, NORM, augment=True)
    assert prep.fused is not None
    torch.manual_seed(0)
    reference = _per_image("flips_color", 300)
    torch.manual_seed(1)
    normalised = prep(_image()[None].repeat(300, 1, 1, 1))
    levels = (normalised * 0.25 + 0.5) * 255  # back to the uint8 scale
    assert float((levels - levels.round()).abs().max()) < 1e-3
    p, statistic = _worst_p(reference, levels.round())
    assert p > 1e-3, f"{statistic} distributed differently (KS p={p:.2g})"
