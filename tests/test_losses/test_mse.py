"""Tests of MSELoss (element mean of the squared differences, TaT)."""
import pytest
import torch

from mmdistill.losses import MSELoss
from mmdistill.registry import MODELS


def mse_reference(s, t, weight):
    """Loop over every element, then divide by their number."""
    flat_s = s.flatten().tolist()
    flat_t = t.flatten().tolist()
    total = 0.0
    for a, b in zip(flat_s, flat_t):
        total += (a - b)**2
    return weight * total / len(flat_s)


def test_value_matches_loop():
    torch.manual_seed(0)
    s = torch.randn(2, 3, 4, 5, dtype=torch.float64)
    t = torch.randn(2, 3, 4, 5, dtype=torch.float64)
    loss = MSELoss(loss_weight=1.7)(s, t)
    assert loss.dtype == torch.float64 and loss.dim() == 0
    ref = mse_reference(s, t, 1.7)
    assert abs(loss.item() - ref) <= 1e-6 * abs(ref)


def test_mean_not_sum():
    torch.manual_seed(1)
    s = torch.randn(1, 4, 3, 3, dtype=torch.float64)
    t = torch.randn(1, 4, 3, 3, dtype=torch.float64)
    loss = MSELoss()(s, t)
    # Repeating along any axis keeps an element mean unchanged.
    assert torch.allclose(
        MSELoss()(torch.cat([s, s], 1), torch.cat([t, t], 1)), loss,
        rtol=1e-12)
    assert torch.allclose(
        MSELoss()(s.repeat(3, 1, 1, 1), t.repeat(3, 1, 1, 1)), loss,
        rtol=1e-12)


def test_zero_when_equal_and_registry_build():
    t = torch.randn(2, 3, 4, 4, dtype=torch.float64)
    loss = MODELS.build(dict(type='MSELoss', loss_weight=1.0))
    assert isinstance(loss, MSELoss)
    assert loss(t.clone(), t).item() == 0.0
    assert loss(t + 1, t).item() == pytest.approx(1.0)


def test_gradient_to_student_not_teacher():
    s = torch.randn(2, 3, 4, 4, dtype=torch.float64, requires_grad=True)
    t = torch.randn(2, 3, 4, 4, dtype=torch.float64, requires_grad=True)
    MSELoss()(s, t).backward()
    assert t.grad is None
    assert torch.allclose(s.grad, 2 * (s - t).detach() / s.numel())


def test_pspnet_stage4_batch_one():
    # PSPNet-R101 stage 4 (2048 channels) at 1/8 of a 64 x 64 crop.
    s = torch.randn(1, 2048, 8, 8, requires_grad=True)
    t = torch.randn(1, 2048, 8, 8)
    loss = MSELoss()(s, t)
    loss.backward()
    assert torch.isfinite(loss) and s.grad is not None
    assert torch.allclose(loss, ((s.detach() - t)**2).mean(), rtol=1e-5)


def test_half_precision_gives_float32():
    s = torch.randn(2, 3, 4, 4).half()
    t = torch.randn(2, 3, 4, 4).bfloat16()
    loss = MSELoss()(s, t)
    assert loss.dtype == torch.float32 and torch.isfinite(loss)


def test_shape_mismatch_raises():
    with pytest.raises(ValueError, match=r'\(2, 3, 4, 4\).*\(2, 3, 8, 8\)'):
        MSELoss()(torch.randn(2, 3, 4, 4), torch.randn(2, 3, 8, 8))


class _Private(torch.autograd.Function):
    """Declares that it keeps no reference to its output."""
    private_output = True

    @staticmethod
    def forward(ctx, x):
        return x * 2

    @staticmethod
    def backward(ctx, grad):
        return grad * 2


@pytest.mark.parametrize('in_place', [True, False])
def test_gradient_written_over_a_private_input_only(in_place):
    """Within gradients_in_place (a distillation pair) a private output
    (TaT's patch-group attention) becomes the gradient in place; any other
    input, and any input outside it, is left as it was; the gradients equal
    F.mse_loss's either way."""
    import contextlib

    from torch.nn import functional as F

    from mmdistill.losses.functional import output_is_private
    from mmdistill.utils.tensor import gradients_in_place
    torch.manual_seed(0)
    x = torch.randn(2, 3, 4, 4, dtype=torch.float64, requires_grad=True)
    t = torch.randn(2, 3, 4, 4, dtype=torch.float64)
    (ref, ) = torch.autograd.grad(0.7 * F.mse_loss(x * 2, t), [x])
    for make, private in ((lambda: _Private.apply(x), True),
                          (lambda: x * 2, False)):
        y = make()
        kept = y.detach().clone()
        assert output_is_private(y) is private
        with gradients_in_place() if in_place else contextlib.nullcontext():
            loss = MSELoss(loss_weight=0.7)(y, t)
        (grad, ) = torch.autograd.grad(loss, [x])
        assert torch.allclose(grad, ref, rtol=1e-12, atol=0)
        assert torch.equal(y.detach(), kept) is not (private and in_place)


def test_private_input_saved_elsewhere_is_refused():
    """Something else that saved the private output for a later backward
    is stopped by autograd's version check, never given changed values."""
    from mmdistill.utils.tensor import gradients_in_place
    x = torch.randn(2, 3, requires_grad=True)
    y = _Private.apply(x)
    other = (y * y).sum()  # saves y, for a backward that runs later
    with gradients_in_place():
        loss = MSELoss()(y, torch.zeros(2, 3)) + other
    with pytest.raises(RuntimeError, match='modified by an inplace'):
        loss.backward()


def test_mean_squared_error_broadcast_target_is_f_mse_loss():
    from torch.nn import functional as F

    from mmdistill.losses.functional import mean_squared_error
    from mmdistill.utils.tensor import gradients_in_place
    x = torch.randn(2, 3, 4, requires_grad=True)
    t = torch.randn(3, 4)
    with gradients_in_place(), pytest.warns(UserWarning):
        value = mean_squared_error(_Private.apply(x), t)
    with pytest.warns(UserWarning):
        assert torch.equal(value, F.mse_loss(x * 2, t))
