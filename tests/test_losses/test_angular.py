"""Tests of AngularLoss: LAD, CAD, PAD of the angular-distillation paper
(Liu et al., WACV 2024, Eq. 5, 7, 8)."""
import math

import pytest
import torch
import torch.nn.functional as F

from mmdistill.losses import AngularLoss
from mmdistill.registry import MODELS


def _unit(values):
    norm = math.sqrt(sum(v * v for v in values))
    return [v / norm for v in values]


def _sq_dist(a, b):
    return sum((x - y)**2 for x, y in zip(a, b))


def angular_reference(s, t, mode, weight):
    """Eq. 5 / 7 / 8 written with explicit loops, then the batch mean."""
    n, c, h, w = s.shape
    total = 0.0
    for i in range(n):
        if mode == 'layer':
            vs = [s[i, j, y, x].item() for j in range(c) for y in range(h)
                  for x in range(w)]
            vt = [t[i, j, y, x].item() for j in range(c) for y in range(h)
                  for x in range(w)]
            total += _sq_dist(_unit(vs), _unit(vt))
        elif mode == 'channel':
            acc = 0.0
            for j in range(c):
                vs = [s[i, j, y, x].item() for y in range(h) for x in range(w)]
                vt = [t[i, j, y, x].item() for y in range(h) for x in range(w)]
                acc += _sq_dist(_unit(vs), _unit(vt))
            total += acc / c
        else:
            acc = 0.0
            for y in range(h):
                for x in range(w):
                    vs = [s[i, j, y, x].item() for j in range(c)]
                    vt = [t[i, j, y, x].item() for j in range(c)]
                    acc += _sq_dist(_unit(vs), _unit(vt))
            total += acc / (h * w)
    return weight * total / n


def two_minus_two_cos(s, t, mode):
    """2 - 2 cos of the compared vectors, from torch's cosine similarity."""
    n, c = s.shape[:2]
    if mode == 'layer':
        cos = F.cosine_similarity(s.reshape(n, -1), t.reshape(n, -1), dim=1)
    elif mode == 'channel':
        cos = F.cosine_similarity(
            s.reshape(n, c, -1), t.reshape(n, c, -1), dim=2)
    else:
        cos = F.cosine_similarity(
            s.reshape(n, c, -1), t.reshape(n, c, -1), dim=1)
    return (2 - 2 * cos).reshape(n, -1).mean(1).mean()


MODES = ['layer', 'channel', 'point']


@pytest.mark.parametrize('mode', MODES)
def test_value_matches_loop(mode):
    torch.manual_seed(0)
    s = torch.randn(2, 3, 4, 5, dtype=torch.float64)
    t = torch.randn(2, 3, 4, 5, dtype=torch.float64)
    loss = AngularLoss(mode=mode, loss_weight=10.0)(s, t)
    assert loss.dtype == torch.float64 and loss.dim() == 0
    ref = angular_reference(s, t, mode, 10.0)
    assert abs(loss.item() - ref) <= 1e-6 * abs(ref)


@pytest.mark.parametrize('mode', MODES)
def test_equals_two_minus_two_cos(mode):
    torch.manual_seed(1)
    s = torch.randn(3, 4, 3, 5, dtype=torch.float64)
    t = torch.randn(3, 4, 3, 5, dtype=torch.float64)
    loss = AngularLoss(mode=mode)(s, t)
    ref = two_minus_two_cos(s, t, mode)
    assert torch.allclose(loss, ref, rtol=1e-6, atol=0)


def test_modes_differ():
    torch.manual_seed(2)
    s = torch.randn(2, 3, 4, 5, dtype=torch.float64)
    t = torch.randn(2, 3, 4, 5, dtype=torch.float64)
    values = [AngularLoss(mode=m)(s, t).item() for m in MODES]
    assert len({round(v, 9) for v in values}) == 3


@pytest.mark.parametrize('mode', MODES)
@pytest.mark.parametrize('scale', [1e-6, 0.3, 1.0, 25.0])
def test_zero_for_positive_multiple(mode, scale):
    torch.manual_seed(3)
    t = torch.randn(2, 3, 4, 5, dtype=torch.float64)
    loss = AngularLoss(mode=mode)(scale * t, t)
    assert abs(loss.item()) < 1e-12


def test_opposite_direction_is_four():
    t = torch.randn(2, 3, 4, 5, dtype=torch.float64)
    for mode in MODES:
        loss = AngularLoss(mode=mode)(-2 * t, t)
        assert loss.item() == pytest.approx(4.0, rel=1e-9)


def test_per_channel_scale_only_cad_is_blind():
    # Scaling every channel by its own positive factor keeps every channel's
    # direction, so CAD is 0 while LAD and PAD see the change.
    torch.manual_seed(4)
    t = torch.randn(1, 3, 4, 4, dtype=torch.float64)
    scale = torch.tensor([0.5, 2.0, 7.0], dtype=torch.float64)
    s = t * scale[None, :, None, None]
    assert AngularLoss(mode='channel')(s, t).item() < 1e-12
    assert AngularLoss(mode='layer')(s, t).item() > 1e-3
    assert AngularLoss(mode='point')(s, t).item() > 1e-3


@pytest.mark.parametrize('mode', MODES)
def test_gradient_to_student_not_teacher(mode):
    s = torch.randn(2, 3, 4, 4, dtype=torch.float64, requires_grad=True)
    t = torch.randn(2, 3, 4, 4, dtype=torch.float64, requires_grad=True)
    AngularLoss(mode=mode)(s, t).backward()
    assert t.grad is None
    assert s.grad is not None and s.grad.abs().sum() > 0


@pytest.mark.parametrize('mode', MODES)
def test_zero_vectors_no_nan(mode):
    t = torch.randn(1, 3, 4, 4, dtype=torch.float64)
    s = torch.randn(1, 3, 4, 4, dtype=torch.float64)
    s[:, 0] = 0  # a dead channel (CAD vector zero, PAD vectors shorter)
    t[:, :, 0, 0] = 0  # a zero position (PAD vector zero)
    for student, teacher in ((s, t), (torch.zeros_like(s), t),
                             (torch.zeros_like(s), torch.zeros_like(t))):
        student = student.clone().requires_grad_(True)
        loss = AngularLoss(mode=mode)(student, teacher)
        loss.backward()
        assert torch.isfinite(loss)
        assert torch.isfinite(student.grad).all()
    both_zero = AngularLoss(mode=mode)(torch.zeros_like(s),
                                       torch.zeros_like(t))
    assert both_zero.item() == 0.0


@pytest.mark.parametrize('mode', MODES)
def test_real_shapes_batch_one(mode):
    torch.manual_seed(5)
    loss = AngularLoss(mode=mode, loss_weight=10.0)
    # PSPNet-R101 stage 4 at 1/8 of a 64 x 64 crop, then 5 FPN levels.
    shapes = [(1, 2048, 8, 8)] + [(1, 256, k, k) for k in (16, 8, 4, 2, 1)]
    for shape in shapes:
        s = torch.randn(shape, dtype=torch.float64, requires_grad=True)
        t = torch.randn(shape, dtype=torch.float64)
        value = loss(s, t)
        value.backward()
        assert torch.isfinite(s.grad).all()
        ref = 10.0 * two_minus_two_cos(s.detach(), t, mode)
        assert torch.allclose(value, ref, rtol=1e-6, atol=1e-12)


def test_half_precision_gives_float32():
    s = torch.randn(2, 8, 4, 4).half()
    t = torch.randn(2, 8, 4, 4).half()
    for mode in MODES:
        loss = AngularLoss(mode=mode)(s, t)
        assert loss.dtype == torch.float32 and torch.isfinite(loss)
        ref = two_minus_two_cos(s.float(), t.float(), mode)
        assert torch.allclose(loss, ref, rtol=1e-5)


def test_shape_mismatch_and_bad_mode_raise():
    with pytest.raises(ValueError, match=r'\(2, 3, 4, 4\).*\(2, 6, 4, 4\)'):
        AngularLoss()(torch.randn(2, 3, 4, 4), torch.randn(2, 6, 4, 4))
    with pytest.raises(ValueError, match='mode'):
        AngularLoss(mode='pixel')


def test_registry_build():
    loss = MODELS.build(dict(type='AngularLoss', mode='channel',
                             loss_weight=10))
    assert isinstance(loss, AngularLoss)
    assert loss.mode == 'channel' and loss.loss_weight == 10
