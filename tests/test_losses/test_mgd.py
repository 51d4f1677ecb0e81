"""Tests of MGDLoss (loss_weight * sum((G(S * M) - T)^2) / N)."""
import pytest
import torch

from mmdistill.losses import L2Loss, MGDLoss
from mmdistill.registry import MODELS


def mgd_reference(s, t, weight):
    n = s.shape[0]
    total = 0.0
    for a, b in zip(s.flatten().tolist(), t.flatten().tolist()):
        total += (a - b)**2
    return weight * total / n


def test_value_matches_loop():
    torch.manual_seed(0)
    s = torch.randn(2, 3, 4, 5, dtype=torch.float64)
    t = torch.randn(2, 3, 4, 5, dtype=torch.float64)
    loss = MGDLoss(loss_weight=2e-5)(s, t)
    assert loss.dtype == torch.float64 and loss.dim() == 0
    ref = mgd_reference(s, t, 2e-5)
    assert abs(loss.item() - ref) <= 1e-6 * abs(ref)


def test_loss_weight_is_the_weight_alpha_its_former_name():
    s = torch.randn(2, 3, 4, 4, dtype=torch.float64)
    t = torch.randn(2, 3, 4, 4, dtype=torch.float64)
    by_weight = MGDLoss(loss_weight=0.3)
    positional = MGDLoss(0.3)
    with pytest.warns(DeprecationWarning, match='loss_weight'):
        by_alpha = MODELS.build(dict(type='MGDLoss', alpha=0.3))
    assert isinstance(by_weight, L2Loss)
    for loss in (by_alpha, by_weight, positional):
        assert loss.loss_weight == 0.3
        assert torch.allclose(loss(s, t), L2Loss(0.3)(s, t), rtol=1e-12)
    assert MGDLoss().loss_weight == 1.0


def test_gradient_to_student_not_teacher_fpn_batch_one():
    loss = MGDLoss(loss_weight=2e-5)
    for size in (16, 8, 4, 2, 1):
        s = torch.randn(1, 256, size, size, dtype=torch.float64,
                        requires_grad=True)
        t = torch.randn(1, 256, size, size, dtype=torch.float64,
                        requires_grad=True)
        loss(s, t).backward()
        assert t.grad is None
        assert torch.allclose(s.grad, 2 * 2e-5 * (s - t).detach())


def test_half_precision_and_mismatch():
    loss = MGDLoss(loss_weight=2e-5)(torch.randn(2, 3, 4, 4).half(),
                                     torch.randn(2, 3, 4, 4).half())
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    with pytest.raises(ValueError, match=r'\(2, 3, 4, 4\).*\(2, 5, 4, 4\)'):
        MGDLoss()(torch.randn(2, 3, 4, 4), torch.randn(2, 5, 4, 4))
