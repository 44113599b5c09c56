"""The 8 dihedral views: distinct, exact permutations, and a TTA prediction that no view can change."""

import torch

from allwen.models.tta import dihedral_views, tta_probabilities


def test_eight_distinct_views_that_are_exact_pixel_permutations():
    x = torch.arange(2 * 3 * 4 * 4, dtype=torch.float32).reshape(2, 3, 4, 4)
    views = dihedral_views(x)
    assert len(views) == 8
    assert len({tuple(v.flatten().tolist()) for v in views}) == 8
    for v in views:
        assert torch.equal(v.sort(dim=-1).values.sum(), x.sort(dim=-1).values.sum())
        assert torch.equal(torch.sort(v.flatten()).values, torch.sort(x.flatten()).values)


def test_tta_output_is_invariant_to_rotating_or_mirroring_the_input():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.Flatten(), torch.nn.LazyLinear(2), torch.nn.Softmax(dim=1))
    x = torch.rand(3, 3, 8, 8)
    with torch.no_grad():
        base = tta_probabilities(net, x)
        for view in dihedral_views(x):
            assert torch.allclose(tta_probabilities(net, view), base, atol=1e-6)
        assert not torch.allclose(net(x.flip(-1)), net(x), atol=1e-4)  # the network alone is not invariant
