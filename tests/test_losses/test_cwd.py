"""Tests of ChannelWiseDivergence (CWD)."""
import math

import pytest
import torch

from mmdistill.losses import ChannelWiseDivergence
from mmdistill.registry import MODELS


def _softmax(values, tau):
    top = max(values)
    exps = [math.exp((v - top) / tau) for v in values]
    total = sum(exps)
    return [e / total for e in exps]


def cwd_reference(s, t, tau, weight):
    """Per (n, c): softmax over H*W, KL(teacher || student), by loops."""
    n, c = s.shape[:2]
    total = 0.0
    for i in range(n):
        for j in range(c):
            p_s = _softmax(s[i, j].flatten().tolist(), tau)
            p_t = _softmax(t[i, j].flatten().tolist(), tau)
            total += sum(pt * (math.log(pt) - math.log(ps))
                         for pt, ps in zip(p_t, p_s))
    return weight * tau**2 * total / (n * c)


@pytest.mark.parametrize('tau', [1.0, 4.0])
def test_value_matches_loop(tau):
    torch.manual_seed(0)
    s = torch.randn(2, 3, 4, 5, dtype=torch.float64)
    t = 2 * torch.randn(2, 3, 4, 5, dtype=torch.float64)
    loss = ChannelWiseDivergence(tau=tau, loss_weight=3.0)(s, t)
    assert loss.dtype == torch.float64 and loss.dim() == 0
    ref = cwd_reference(s, t, tau, 3.0)
    assert abs(loss.item() - ref) <= 1e-6 * abs(ref)


def test_direction_is_teacher_to_student():
    # KL is not symmetric: swapping the roles changes the value.
    torch.manual_seed(1)
    s = torch.randn(1, 2, 3, 3, dtype=torch.float64)
    t = 3 * torch.randn(1, 2, 3, 3, dtype=torch.float64)
    loss = ChannelWiseDivergence()(s, t).item()
    swapped = ChannelWiseDivergence()(t, s).item()
    assert loss == pytest.approx(cwd_reference(s, t, 1.0, 1.0), rel=1e-9)
    assert abs(loss - swapped) > 1e-6


def test_zero_iff_same_spatial_distribution():
    torch.manual_seed(2)
    t = torch.randn(2, 3, 4, 4, dtype=torch.float64)
    cwd = ChannelWiseDivergence(tau=2.0)
    assert abs(cwd(t.clone(), t).item()) < 1e-14
    # A per-channel constant shift leaves each spatial softmax unchanged.
    shift = torch.randn(2, 3, 1, 1, dtype=torch.float64)
    assert abs(cwd(t + shift, t).item()) < 1e-12
    assert cwd(t + 0.1 * torch.randn_like(t), t).item() > 0


def test_divided_by_n_times_c():
    torch.manual_seed(3)
    s = torch.randn(1, 2, 3, 3, dtype=torch.float64)
    t = torch.randn(1, 2, 3, 3, dtype=torch.float64)
    cwd = ChannelWiseDivergence()
    base = cwd(s, t)
    assert torch.allclose(cwd(s.repeat(3, 1, 1, 1), t.repeat(3, 1, 1, 1)),
                          base, rtol=1e-12)
    assert torch.allclose(cwd(s.repeat(1, 4, 1, 1), t.repeat(1, 4, 1, 1)),
                          base, rtol=1e-12)


def test_gradient_to_student_not_teacher():
    s = torch.randn(2, 3, 4, 4, dtype=torch.float64, requires_grad=True)
    t = torch.randn(2, 3, 4, 4, dtype=torch.float64, requires_grad=True)
    ChannelWiseDivergence(tau=4.0)(s, t).backward()
    assert t.grad is None
    assert s.grad is not None and s.grad.abs().sum() > 0


def test_real_shapes_batch_one():
    torch.manual_seed(4)
    # PSPNet logits (19 classes) at 1/8 of a 64 x 64 crop, weight 5, tau 1.
    cwd = ChannelWiseDivergence(tau=1.0, loss_weight=5.0)
    s = torch.randn(1, 19, 8, 8, dtype=torch.float64, requires_grad=True)
    t = torch.randn(1, 19, 8, 8, dtype=torch.float64)
    value = cwd(s, t)
    value.backward()
    assert value.item() == pytest.approx(
        cwd_reference(s.detach(), t, 1.0, 5.0), rel=1e-6)
    # Five FPN levels of 256 channels, weight 10 per level.
    cwd = ChannelWiseDivergence(tau=1.0, loss_weight=10.0)
    for size in (16, 8, 4, 2, 1):
        s = torch.randn(1, 256, size, size, requires_grad=True)
        t = torch.randn(1, 256, size, size)
        value = cwd(s, t)
        value.backward()
        assert torch.isfinite(value) and torch.isfinite(s.grad).all()
        log_p_s = torch.log_softmax(s.detach().double().flatten(2), dim=2)
        log_p_t = torch.log_softmax(t.double().flatten(2), dim=2)
        ref = 10 * torch.einsum('ncp,ncp->', log_p_t.exp(),
                                log_p_t - log_p_s) / 256
        assert value.item() == pytest.approx(ref.item(), rel=1e-5, abs=1e-7)
    # A 1 x 1 map has a single position: both distributions are 1.
    assert value.item() == 0.0


def test_half_precision_gives_float32():
    s = torch.randn(2, 3, 4, 4).half()
    t = (3 * torch.randn(2, 3, 4, 4)).half()
    loss = ChannelWiseDivergence(tau=4.0)(s, t)
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    ref = cwd_reference(s.double(), t.double(), 4.0, 1.0)
    assert loss.item() == pytest.approx(ref, rel=1e-4)


def test_shape_mismatch_raises():
    with pytest.raises(ValueError, match=r'\(2, 3, 4, 4\).*\(2, 5, 4, 4\)'):
        ChannelWiseDivergence()(torch.randn(2, 3, 4, 4),
                                torch.randn(2, 5, 4, 4))


def test_registry_build():
    loss = MODELS.build(dict(type='ChannelWiseDivergence', tau=4,
                             loss_weight=3))
    assert isinstance(loss, ChannelWiseDivergence) and loss.tau == 4
