"""Tests of KDLoss (Hinton et al. 2015) against a float64 numpy
reference."""
import numpy as np
import pytest
import torch

from mmdistill.losses import KDLoss
from mmdistill.registry import MODELS


def np_softmax(z, tau):
    z = np.asarray(z, dtype=np.float64) / tau
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def kd_reference(s, t, tau, weight):
    """tau^2 * mean over samples of sum_c p_t (log p_t - log p_s)."""
    p_s, p_t = np_softmax(s, tau), np_softmax(t, tau)
    per_sample = (p_t * (np.log(p_t) - np.log(p_s))).sum(axis=1)
    return weight * tau**2 * per_sample.mean()


@pytest.mark.parametrize('tau', [1.0, 4.0])
def test_value_matches_numpy(tau):
    torch.manual_seed(0)
    s = 3 * torch.randn(6, 10, dtype=torch.float64)
    t = 3 * torch.randn(6, 10, dtype=torch.float64)
    loss = KDLoss(tau=tau, loss_weight=0.5)(s, t)
    assert loss.dtype == torch.float64 and loss.dim() == 0
    ref = kd_reference(s.numpy(), t.numpy(), tau, 0.5)
    assert loss.item() == pytest.approx(ref, rel=1e-12)


def test_zero_for_equal_or_shifted_logits_and_positive_otherwise():
    torch.manual_seed(1)
    t = torch.randn(4, 7, dtype=torch.float64)
    kd = KDLoss(tau=2.0)
    assert abs(kd(t.clone(), t).item()) < 1e-15
    # a constant per sample leaves each softmax unchanged
    assert abs(kd(t + torch.randn(4, 1, dtype=torch.float64), t).item()) \
        < 1e-14
    assert kd(t + 0.1 * torch.randn_like(t), t).item() > 0


def test_direction_is_teacher_to_student():
    torch.manual_seed(2)
    s = torch.randn(3, 5, dtype=torch.float64)
    t = 4 * torch.randn(3, 5, dtype=torch.float64)
    forward = KDLoss()(s, t).item()
    assert forward == pytest.approx(kd_reference(s.numpy(), t.numpy(),
                                                 1.0, 1.0), rel=1e-12)
    assert abs(forward - KDLoss()(t, s).item()) > 1e-6


def test_gradient_is_tau_times_probability_difference():
    # Hinton et al., Section 2: d/dz_i of the T^2-scaled soft loss is
    # T * (q_i - p_i) per sample (here also divided by N for the mean)
    torch.manual_seed(3)
    s = torch.randn(5, 8, dtype=torch.float64, requires_grad=True)
    t = torch.randn(5, 8, dtype=torch.float64, requires_grad=True)
    tau, weight = 3.0, 0.7
    KDLoss(tau=tau, loss_weight=weight)(s, t).backward()
    expected = weight * tau / 5 * (np_softmax(s.detach().numpy(), tau) -
                                   np_softmax(t.detach().numpy(), tau))
    np.testing.assert_allclose(s.grad.numpy(), expected, rtol=1e-10,
                               atol=1e-15)
    assert t.grad is None


def test_mean_over_batch():
    torch.manual_seed(4)
    s = torch.randn(2, 6, dtype=torch.float64)
    t = torch.randn(2, 6, dtype=torch.float64)
    kd = KDLoss(tau=2.0)
    assert kd(s.repeat(3, 1), t.repeat(3, 1)).item() == pytest.approx(
        kd(s, t).item(), rel=1e-12)


def test_imagenet_shape_and_half_precision():
    torch.manual_seed(5)
    s = torch.randn(4, 1000, requires_grad=True)
    t = torch.randn(4, 1000)
    loss = KDLoss()(s, t)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(s.grad).all()
    half = KDLoss(tau=4.0)(s.detach().half(), t.half())
    assert half.dtype == torch.float32
    ref = kd_reference(s.detach().half().double().numpy(),
                       t.half().double().numpy(), 4.0, 1.0)
    assert half.item() == pytest.approx(ref, rel=1e-4)


def test_wrong_shapes_raise():
    with pytest.raises(ValueError, match=r'\(2, 10\).*\(2, 12\)'):
        KDLoss()(torch.randn(2, 10), torch.randn(2, 12))
    with pytest.raises(ValueError, match="logits of shape \\(N, C\\).*head"):
        KDLoss()(torch.randn(2, 10, 4, 4), torch.randn(2, 10, 4, 4))
    with pytest.raises(ValueError, match='tau > 0'):
        KDLoss(tau=0)


def test_registry_build_and_data_samples_accepted():
    loss = MODELS.build(dict(type='KDLoss', tau=4, loss_weight=0.5))
    assert isinstance(loss, KDLoss) and loss.tau == 4
    s, t = torch.randn(2, 3), torch.randn(2, 3)
    assert torch.equal(loss(s, t, data_samples=[None, None]), loss(s, t))
