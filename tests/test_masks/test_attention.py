"""Spatial / channel attention of FGD against explicit loops in float64."""
import math

import pytest
import torch

from mmdistill.masks import channel_attention, spatial_attention


def _rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).abs().max() / b.abs().max().clamp_min(1e-300)).item()


def _ref_spatial(feat, t):
    n, c, h, w = feat.shape
    out = torch.zeros(n, h, w, dtype=torch.float64)
    for i in range(n):
        g = [[sum(abs(feat[i, k, y, x].item()) for k in range(c)) / c
              for x in range(w)] for y in range(h)]
        z = sum(math.exp(g[y][x] / t) for y in range(h) for x in range(w))
        for y in range(h):
            for x in range(w):
                out[i, y, x] = h * w * math.exp(g[y][x] / t) / z
    return out


def _ref_channel(feat, t):
    n, c, h, w = feat.shape
    out = torch.zeros(n, c, dtype=torch.float64)
    for i in range(n):
        g = [sum(abs(feat[i, k, y, x].item()) for y in range(h)
                 for x in range(w)) / (h * w) for k in range(c)]
        z = sum(math.exp(v / t) for v in g)
        for k in range(c):
            out[i, k] = c * math.exp(g[k] / t) / z
    return out


@pytest.mark.parametrize('t', [0.5, 1.0, 2.0])
def test_spatial_attention_matches_loops(t):
    torch.manual_seed(0)
    feat = torch.randn(2, 5, 4, 6, dtype=torch.float64)
    out = spatial_attention(feat, t)
    assert out.shape == (2, 4, 6)
    assert out.dtype == torch.float64
    assert _rel_err(out, _ref_spatial(feat, t)) <= 1e-6
    assert torch.allclose(out.sum(dim=(1, 2)),
                          torch.full((2, ), 24.0, dtype=torch.float64))


@pytest.mark.parametrize('t', [0.5, 1.0, 2.0])
def test_channel_attention_matches_loops(t):
    torch.manual_seed(1)
    feat = torch.randn(3, 7, 3, 5, dtype=torch.float64)
    out = channel_attention(feat, t)
    assert out.shape == (3, 7)
    assert out.dtype == torch.float64
    assert _rel_err(out, _ref_channel(feat, t)) <= 1e-6
    assert torch.allclose(out.sum(dim=1),
                          torch.full((3, ), 7.0, dtype=torch.float64))


def test_default_temperature_is_half():
    torch.manual_seed(2)
    feat = torch.randn(1, 4, 3, 3, dtype=torch.float64)
    assert torch.equal(spatial_attention(feat), spatial_attention(feat, 0.5))
    assert torch.equal(channel_attention(feat), channel_attention(feat, 0.5))
    assert not torch.allclose(spatial_attention(feat),
                              spatial_attention(feat, 1.0))


def test_attention_uses_absolute_value():
    torch.manual_seed(3)
    feat = torch.randn(2, 4, 3, 3, dtype=torch.float64)
    assert torch.allclose(spatial_attention(feat), spatial_attention(-feat))
    assert torch.allclose(channel_attention(feat),
                          channel_attention(feat.abs()))


def test_uniform_feature_gives_ones():
    feat = torch.full((2, 3, 4, 5), -0.7, dtype=torch.float64)
    assert torch.allclose(spatial_attention(feat),
                          torch.ones(2, 4, 5, dtype=torch.float64))
    assert torch.allclose(channel_attention(feat),
                          torch.ones(2, 3, dtype=torch.float64))


def test_single_position_map():
    # the 128-stride FPN level of a 128x128 input is 1x1
    feat = torch.randn(2, 8, 1, 1)
    assert torch.allclose(spatial_attention(feat), torch.ones(2, 1, 1))
    assert channel_attention(feat).shape == (2, 8)


def test_bad_inputs():
    with pytest.raises(ValueError):
        spatial_attention(torch.randn(2, 3, 4))
    with pytest.raises(ValueError):
        channel_attention(torch.randn(2, 3, 4, 4), tau=0.0)
