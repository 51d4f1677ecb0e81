"""Tests of MagnitudeLoss, Eq. 4 of the angular-distillation paper (Liu et
al., WACV 2024)."""
import math

import pytest
import torch

from mmdistill.losses import MagnitudeLoss, MSELoss
from mmdistill.registry import MODELS


def magnitude_reference(s, t, weight):
    """(||F^t|| - ||F^s||)^2 / (C*H*W) per sample by loops, batch mean."""
    n = s.shape[0]
    total = 0.0
    for i in range(n):
        vs = s[i].flatten().tolist()
        vt = t[i].flatten().tolist()
        ns = math.sqrt(sum(v * v for v in vs))
        nt = math.sqrt(sum(v * v for v in vt))
        total += (nt - ns)**2 / len(vs)
    return weight * total / n


def test_value_matches_loop():
    torch.manual_seed(0)
    s = 2 * torch.randn(3, 3, 4, 5, dtype=torch.float64)
    t = torch.randn(3, 3, 4, 5, dtype=torch.float64)
    loss = MagnitudeLoss(loss_weight=0.7)(s, t)
    assert loss.dtype == torch.float64 and loss.dim() == 0
    ref = magnitude_reference(s, t, 0.7)
    assert abs(loss.item() - ref) <= 1e-6 * abs(ref)


def test_eq3_decomposition_of_mse():
    # Angular-distillation paper, Eq. 3:
    # MSE = [(m - n)^2 + 2 m n (1 - cos)] / N, N = C*H*W.
    torch.manual_seed(1)
    s = torch.randn(1, 4, 3, 5, dtype=torch.float64)
    t = 3 * torch.randn(1, 4, 3, 5, dtype=torch.float64)
    m, n = t.norm(), s.norm()
    cos = torch.nn.functional.cosine_similarity(s.flatten(), t.flatten(),
                                                dim=0)
    angular = 2 * m * n * (1 - cos) / s.numel()
    total = MagnitudeLoss()(s, t) + angular
    assert torch.allclose(total, MSELoss()(s, t), rtol=1e-10)


def test_zero_when_norms_equal():
    t = torch.randn(2, 3, 4, 4, dtype=torch.float64)
    perm = t.flatten(1)[:, torch.randperm(t[0].numel())].reshape(t.shape)
    assert MagnitudeLoss()(-t, t).item() < 1e-20
    assert MagnitudeLoss()(perm, t).item() < 1e-20
    assert MagnitudeLoss()(2 * t, t).item() > 0


def test_gradient_to_student_not_teacher_and_zero_feature():
    s = torch.randn(2, 3, 4, 4, dtype=torch.float64, requires_grad=True)
    t = torch.randn(2, 3, 4, 4, dtype=torch.float64, requires_grad=True)
    MagnitudeLoss()(s, t).backward()
    assert t.grad is None
    assert s.grad is not None and s.grad.abs().sum() > 0
    zero = torch.zeros(1, 3, 4, 4, dtype=torch.float64, requires_grad=True)
    loss = MagnitudeLoss()(zero, t[:1])
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(zero.grad).all()


def test_pspnet_stage4_batch_one():
    s = torch.randn(1, 2048, 8, 8, requires_grad=True)
    t = 2 * torch.randn(1, 2048, 8, 8)
    loss = MagnitudeLoss(loss_weight=10)(s, t)
    loss.backward()
    ref = 10 * (t.norm() - s.detach().norm())**2 / s[0].numel()
    assert torch.allclose(loss, ref, rtol=1e-4)


def test_half_precision_and_mismatch():
    loss = MagnitudeLoss()(torch.randn(2, 3, 4, 4).half(),
                           torch.randn(2, 3, 4, 4).half())
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    with pytest.raises(ValueError, match=r'\(2, 3, 4, 4\).*\(2, 4, 4, 4\)'):
        MagnitudeLoss()(torch.randn(2, 3, 4, 4), torch.randn(2, 4, 4, 4))


def test_registry_build():
    assert isinstance(
        MODELS.build(dict(type='MagnitudeLoss', loss_weight=1)),
        MagnitudeLoss)
