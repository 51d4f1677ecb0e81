"""Tests of LinearConnector (one 1x1 convolution, the "Linear" ablation of
the MLP-connector paper, Liu et al., ICCV-W 2023)."""
import pytest
import torch

from mmdistill.connectors import LinearConnector
from mmdistill.registry import MODELS


def rel_err(a, b):
    return ((a - b).norm() / b.norm()).item()


def reference(conn, x):
    """Explicit per-position matrix product ``W x + b`` in float64."""
    weight = conn.conv.weight.detach()[:, :, 0, 0]
    bias = conn.conv.bias.detach()
    out = torch.einsum('oc,nchw->nohw', weight, x)
    return out + bias[None, :, None, None]


@pytest.mark.parametrize('in_c,out_c,n,size', [
    (256, 256, 2, (16, 12)),  # FPN P3 of a 128 x 96 input
    (512, 2048, 1, (4, 5)),   # PSPNet stage 4, channel mismatch, batch 1
    (8, 3, 3, (1, 1)),
])
def test_value_against_einsum(in_c, out_c, n, size):
    torch.manual_seed(0)
    conn = LinearConnector(in_c, out_c).double()
    x = torch.randn(n, in_c, *size, dtype=torch.float64)
    out = conn(x)
    assert out.dtype == torch.float64 and out.shape == (n, out_c, *size)
    assert rel_err(out, reference(conn, x)) <= 1e-6


def test_gradients_student_and_params_not_teacher():
    conn = LinearConnector(8, 16)
    student = torch.randn(2, 8, 5, 4, requires_grad=True)
    teacher = torch.randn(2, 16, 5, 4, requires_grad=True)
    ((conn(student, teacher) - teacher.detach()) ** 2).sum().backward()
    assert student.grad is not None and student.grad.abs().sum() > 0
    for name, param in conn.named_parameters():
        assert param.grad is not None and param.grad.abs().sum() > 0, name
    assert teacher.grad is None


def test_no_bias_option_and_registry():
    conn = MODELS.build(dict(type='LinearConnector', in_channels=4,
                             out_channels=6, bias=False))
    assert conn.conv.bias is None
    x = torch.randn(1, 4, 3, 3, dtype=torch.float64)
    conn = conn.double()
    expected = torch.einsum('oc,nchw->nohw',
                            conn.conv.weight.detach()[:, :, 0, 0], x)
    assert rel_err(conn(x), expected) <= 1e-6
