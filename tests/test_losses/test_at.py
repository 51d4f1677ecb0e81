"""Tests of ATLoss (attention transfer)."""
import math

import pytest
import torch
import torch.nn.functional as F

from mmdistill.losses import ATLoss
from mmdistill.registry import MODELS


def _attention(f, p):
    """mean_c |F|^p per position by loops, then divided by its L2 norm."""
    c, h, w = f.shape
    att = []
    for y in range(h):
        for x in range(w):
            att.append(sum(abs(f[j, y, x].item())**p for j in range(c)) / c)
    norm = math.sqrt(sum(a * a for a in att))
    return [a / norm for a in att]


def at_reference(s, t, p, weight):
    n = s.shape[0]
    total = 0.0
    for i in range(n):
        a_s = _attention(s[i], p)
        a_t = _attention(t[i], p)
        total += sum((x - y)**2 for x, y in zip(a_s, a_t))
    return weight * total / n


@pytest.mark.parametrize('p', [1, 2, 3])
def test_value_matches_loop_with_channel_mismatch(p):
    torch.manual_seed(0)
    s = torch.randn(2, 3, 4, 5, dtype=torch.float64)
    t = torch.randn(2, 7, 4, 5, dtype=torch.float64)
    loss = ATLoss(p=p, loss_weight=2.5)(s, t)
    assert loss.dtype == torch.float64 and loss.dim() == 0
    ref = at_reference(s, t, p, 2.5)
    assert abs(loss.item() - ref) <= 1e-6 * abs(ref)


def test_equals_two_minus_two_cos_of_maps():
    torch.manual_seed(1)
    s = torch.randn(3, 4, 5, 5, dtype=torch.float64)
    t = torch.randn(3, 8, 5, 5, dtype=torch.float64)
    a_s = s.pow(2).mean(1).flatten(1)
    a_t = t.pow(2).mean(1).flatten(1)
    cos = F.cosine_similarity(a_s, a_t, dim=1)
    assert torch.allclose(ATLoss()(s, t), (2 - 2 * cos).mean(), rtol=1e-9)


def test_zero_for_scaled_or_sign_flipped_teacher():
    torch.manual_seed(2)
    t = torch.randn(2, 5, 4, 4, dtype=torch.float64)
    for scale in (1e-4, 1.0, 30.0, -2.0):
        assert abs(ATLoss()(scale * t, t).item()) < 1e-12
    assert ATLoss()(t + torch.randn_like(t), t).item() > 0


def test_gradient_to_student_not_teacher():
    s = torch.randn(2, 3, 4, 4, dtype=torch.float64, requires_grad=True)
    t = torch.randn(2, 6, 4, 4, dtype=torch.float64, requires_grad=True)
    ATLoss()(s, t).backward()
    assert t.grad is None
    assert s.grad is not None and s.grad.abs().sum() > 0


def test_real_shapes_batch_one_and_zero_map():
    torch.manual_seed(3)
    # PSPNet R18 stage 4 (512 ch) vs R101 stage 4 (2048 ch) at 1/8 of 64.
    s = torch.randn(1, 512, 8, 8, requires_grad=True)
    t = torch.randn(1, 2048, 8, 8)
    value = ATLoss(loss_weight=1e3)(s, t)
    value.backward()
    assert torch.isfinite(value) and torch.isfinite(s.grad).all()
    for size in (16, 8, 4, 2, 1):
        s = torch.randn(1, 256, size, size, dtype=torch.float64)
        t = torch.randn(1, 256, size, size, dtype=torch.float64)
        a_s = F.normalize(s.pow(2).mean(1).flatten(1), dim=1)
        a_t = F.normalize(t.pow(2).mean(1).flatten(1), dim=1)
        ref = torch.einsum('np,np->', a_s - a_t, a_s - a_t)
        assert torch.allclose(ATLoss()(s, t), ref, rtol=1e-6, atol=1e-15)
    zero = torch.zeros(1, 4, 3, 3, requires_grad=True)
    loss = ATLoss()(zero, torch.randn(1, 4, 3, 3))
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(zero.grad).all()


def test_half_precision_gives_float32():
    loss = ATLoss()(torch.randn(2, 3, 4, 4).half(),
                    torch.randn(2, 5, 4, 4).half())
    assert loss.dtype == torch.float32 and torch.isfinite(loss)


def test_spatial_or_batch_mismatch_raises():
    with pytest.raises(ValueError, match=r'\(2, 3, 4, 4\).*\(2, 3, 8, 8\)'):
        ATLoss()(torch.randn(2, 3, 4, 4), torch.randn(2, 3, 8, 8))
    with pytest.raises(ValueError, match=r'\(2, 3, 4, 4\).*\(1, 3, 4, 4\)'):
        ATLoss()(torch.randn(2, 3, 4, 4), torch.randn(1, 3, 4, 4))


def test_registry_build():
    loss = MODELS.build(dict(type='ATLoss', p=2, loss_weight=1e3))
    assert isinstance(loss, ATLoss) and loss.loss_weight == 1e3
