"""Tests of L2Loss (the MLP-connector paper, Liu et al., ICCV-W 2023: sum
of squared differences / batch size)."""
import pytest
import torch

from mmdistill.losses import L2Loss
from mmdistill.registry import MODELS


def l2_reference(s, t, weight):
    """Loop over every element: sum (s - t)^2, divided by the batch size."""
    total = 0.0
    n, c, h, w = s.shape
    for i in range(n):
        for j in range(c):
            for y in range(h):
                for x in range(w):
                    total += (s[i, j, y, x].item() - t[i, j, y, x].item())**2
    return weight * total / n


def test_value_matches_loop():
    torch.manual_seed(0)
    s = torch.randn(2, 3, 4, 5, dtype=torch.float64)
    t = torch.randn(2, 3, 4, 5, dtype=torch.float64)
    loss = L2Loss(loss_weight=0.3)(s, t)
    assert loss.dtype == torch.float64
    assert loss.dim() == 0
    ref = l2_reference(s, t, 0.3)
    assert abs(loss.item() - ref) <= 1e-6 * abs(ref)


def test_sum_over_elements_divided_by_batch_only():
    torch.manual_seed(1)
    s = torch.randn(1, 4, 3, 3, dtype=torch.float64)
    t = torch.randn(1, 4, 3, 3, dtype=torch.float64)
    loss = L2Loss()(s, t)
    # Repeating the sample keeps the value (divided by N) ...
    doubled = L2Loss()(s.repeat(2, 1, 1, 1), t.repeat(2, 1, 1, 1))
    assert torch.allclose(doubled, loss, rtol=1e-12)
    # ... while it grows with the number of elements (summed, not averaged).
    assert torch.allclose(loss, ((s - t)**2).mean() * s.numel(), rtol=1e-12)
    wider = L2Loss()(torch.cat([s, s], 1), torch.cat([t, t], 1))
    assert torch.allclose(wider, 2 * loss, rtol=1e-12)


def test_zero_when_equal_and_registry_build():
    t = torch.randn(2, 3, 4, 4, dtype=torch.float64)
    loss = MODELS.build(dict(type='L2Loss', loss_weight=2e-5))
    assert isinstance(loss, L2Loss)
    assert loss(t.clone(), t).item() == 0.0


def test_gradient_to_student_not_teacher():
    s = torch.randn(2, 3, 4, 4, dtype=torch.float64, requires_grad=True)
    t = torch.randn(2, 3, 4, 4, dtype=torch.float64, requires_grad=True)
    L2Loss(loss_weight=0.5)(s, t).backward()
    assert t.grad is None
    # d/dS alpha * sum((S - T)^2) / N = 2 * alpha * (S - T) / N
    assert torch.allclose(s.grad, 2 * 0.5 * (s - t).detach() / 2)


def test_fpn_levels_batch_one():
    torch.manual_seed(2)
    loss = L2Loss(loss_weight=2e-5)
    for size in (16, 8, 4, 2, 1):  # strides 8..128 of a 128 x 128 input
        s = torch.randn(1, 256, size, size, requires_grad=True)
        t = torch.randn(1, 256, size, size)
        value = loss(s, t)
        value.backward()
        assert torch.isfinite(value)
        expected = 2e-5 * ((s.detach() - t)**2).sum()
        assert torch.allclose(value, expected, rtol=1e-5)


def test_half_precision_gives_float32():
    s = torch.randn(2, 3, 4, 4).half()
    t = torch.randn(2, 3, 4, 4).half()
    loss = L2Loss()(s, t)
    assert loss.dtype == torch.float32
    assert torch.isfinite(loss)
    ref = ((s.float() - t.float())**2).sum() / 2
    assert torch.allclose(loss, ref, rtol=1e-6)


def test_shape_mismatch_raises():
    with pytest.raises(ValueError, match=r'\(2, 3, 4, 4\).*\(2, 5, 4, 4\)'):
        L2Loss()(torch.randn(2, 3, 4, 4), torch.randn(2, 5, 4, 4))
