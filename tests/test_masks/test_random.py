"""Random spatial / channel masks (MGD)."""
import pytest
import torch

from mmdistill.masks import random_channel_mask, random_spatial_mask


def test_spatial_shape_values_and_ratio():
    g = torch.Generator().manual_seed(0)
    m = random_spatial_mask(8, 64, 64, 0.65, generator=g)
    assert m.shape == (8, 1, 64, 64)
    assert m.dtype == torch.float32
    assert set(m.unique().tolist()) <= {0.0, 1.0}
    masked = 1.0 - m.mean().item()
    # 32768 Bernoulli draws: std of the fraction is about 0.0026
    assert abs(masked - 0.65) < 0.015
    # every image gets its own mask
    assert not torch.equal(m[0], m[1])


@pytest.mark.parametrize('ratio', [0.45, 0.75])
def test_spatial_ratio_per_image(ratio):
    g = torch.Generator().manual_seed(1)
    m = random_spatial_mask(4, 100, 100, ratio, generator=g)
    per_image = 1.0 - m.mean(dim=(1, 2, 3))
    assert torch.all((per_image - ratio).abs() < 0.03)


def test_channel_shape_values_and_ratio():
    g = torch.Generator().manual_seed(2)
    m = random_channel_mask(64, 256, 0.5, generator=g)
    assert m.shape == (64, 256, 1, 1)
    assert set(m.unique().tolist()) <= {0.0, 1.0}
    assert abs((1.0 - m.mean().item()) - 0.5) < 0.02
    m = random_channel_mask(64, 256, 0.2, generator=g)
    assert abs((1.0 - m.mean().item()) - 0.2) < 0.02


def test_extreme_ratios():
    assert torch.all(random_spatial_mask(2, 8, 8, 0.0) == 1)
    assert torch.all(random_spatial_mask(2, 8, 8, 1.0) == 0)
    assert torch.all(random_channel_mask(2, 16, 0.0) == 1)
    assert torch.all(random_channel_mask(2, 16, 1.0) == 0)


def test_generator_reproducible():
    a = random_spatial_mask(2, 16, 16, 0.5,
                            generator=torch.Generator().manual_seed(5))
    b = random_spatial_mask(2, 16, 16, 0.5,
                            generator=torch.Generator().manual_seed(5))
    c = random_spatial_mask(2, 16, 16, 0.5,
                            generator=torch.Generator().manual_seed(6))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_mgd_threshold_rule():
    # MGD zeroes where u > 1 - ratio, u ~ U[0, 1) drawn by torch.rand
    g1 = torch.Generator().manual_seed(7)
    g2 = torch.Generator().manual_seed(7)
    u = torch.rand((3, 1, 5, 5), generator=g1)
    m = random_spatial_mask(3, 5, 5, 0.3, generator=g2)
    assert torch.equal(m, (u <= 0.7).float())


def test_invalid_ratio():
    with pytest.raises(ValueError):
        random_spatial_mask(1, 4, 4, 1.5)
    with pytest.raises(ValueError):
        random_channel_mask(1, 4, -0.1)
