"""Shared loss kernels (``mmdistill/losses/functional.py``)."""
import itertools

import pytest
import torch

from mmdistill.losses.functional import squared_error_map


def written_out(a, b, weight=None, offset=None):
    diff = a - b if offset is None else a - b + offset
    squared = diff.pow(2)
    return (squared if weight is None else squared * weight).sum(dim=1)


@pytest.mark.parametrize('with_weight,with_offset',
                         itertools.product([False, True], repeat=2))
def test_squared_error_map_values_and_gradients(with_weight, with_offset):
    torch.manual_seed(0)
    shape = (2, 3, 4, 5)
    a = torch.randn(shape, dtype=torch.float64, requires_grad=True)
    b = torch.randn(shape, dtype=torch.float64, requires_grad=True)
    weight = torch.rand(2, 3, 1, 1, dtype=torch.float64,
                        requires_grad=True) if with_weight else None
    offset = torch.randn(2, 3, 1, 1, dtype=torch.float64,
                         requires_grad=True) if with_offset else None
    out = squared_error_map(a, b, weight, offset)
    expected = written_out(a, b, weight, offset)
    assert out.shape == (2, 4, 5)
    torch.testing.assert_close(out, expected, rtol=1e-12, atol=1e-12)
    inputs = [x for x in (a, b, weight, offset) if x is not None]
    grad_out = torch.randn_like(out)
    got = torch.autograd.grad(out, inputs, grad_out)
    want = torch.autograd.grad(expected, inputs, grad_out)
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, rtol=1e-12, atol=1e-12)
    assert torch.autograd.gradcheck(
        lambda *x: squared_error_map(*x),
        (a, b, weight, offset))
    # only what is asked for: a teacher without gradient gets none
    out = squared_error_map(a, b.detach(), weight, offset)
    grads = torch.autograd.grad(out.sum(), [a])
    torch.testing.assert_close(
        grads[0], torch.autograd.grad(
            written_out(a, b.detach(), weight, offset).sum(), [a])[0])


def test_squared_error_map_keeps_no_difference_for_the_backward():
    """What the backward holds: the inputs themselves (alive anyway in a
    distillation loss) and the small per-channel tensors, no new map."""
    a = torch.randn(2, 8, 16, 16, requires_grad=True)
    b = torch.randn(2, 8, 16, 16)
    weight = torch.rand(2, 8, 1, 1)
    offset = torch.randn(2, 8, 1, 1, requires_grad=True)
    saved = []

    def pack(x):
        saved.append(x)
        return x

    inputs = {x.data_ptr() for x in (a, b, weight, offset)}
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda x: x):
        squared_error_map(a, b, weight, offset)
    assert saved and all(x.data_ptr() in inputs for x in saved)
    # written out, the difference (a new full-size map) is kept
    saved.clear()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda x: x):
        written_out(a, b, weight, offset)
    assert any(x.numel() == a.numel() and x.data_ptr() not in inputs
               for x in saved)
