"""Tests of MLPConnector (the MLP-connector paper, Liu et al., ICCV-W 2023,
Eq. 2 and Table 7)."""
import pytest
import torch

from mmdistill.connectors import MLPConnector
from mmdistill.registry import MODELS


def rel_err(a, b):
    return ((a - b).norm() / b.norm()).item()


def reference(conn, x):
    """``W_L ReLU(... ReLU(W_1 x + b_1) ...) + b_L`` with einsum."""
    convs = [m for m in conn.mlp if isinstance(m, torch.nn.Conv2d)]
    for i, conv in enumerate(convs):
        x = torch.einsum('oc,nchw->nohw', conv.weight.detach()[:, :, 0, 0],
                         x) + conv.bias.detach()[None, :, None, None]
        if i < len(convs) - 1:
            x = torch.clamp(x, min=0)
    return x


@pytest.mark.parametrize('in_c,out_c,hidden,layers,n,size', [
    (256, 256, None, 1, 2, (16, 12)),   # MLP-base on an FPN level
    (512, 2048, None, 1, 1, (4, 4)),    # PSPNet stage 4, batch 1
    (16, 32, 64, 1, 2, (3, 5)),         # MLP-wider
    (16, 32, None, 2, 2, (3, 5)),       # MLP-deeper
])
def test_value_against_einsum(in_c, out_c, hidden, layers, n, size):
    torch.manual_seed(0)
    conn = MLPConnector(in_c, out_c, hidden, layers).double()
    x = torch.randn(n, in_c, *size, dtype=torch.float64)
    out = conn(x)
    assert out.dtype == torch.float64 and out.shape == (n, out_c, *size)
    assert rel_err(out, reference(conn, x)) <= 1e-6


def test_structure_of_ablations():
    base = MLPConnector(16, 32)
    wider = MLPConnector(16, 32, hidden_channels=64)
    deeper = MLPConnector(16, 32, num_hidden_layers=2)
    assert base.mlp[0].out_channels == 32
    assert wider.mlp[0].out_channels == 64
    assert sum(isinstance(m, torch.nn.Conv2d) for m in deeper.mlp) == 3
    with pytest.raises(ValueError):
        MLPConnector(16, 32, num_hidden_layers=0)


def test_gradients_student_and_params_not_teacher():
    torch.manual_seed(0)
    conn = MLPConnector(8, 16)
    student = torch.randn(2, 8, 5, 4, requires_grad=True)
    teacher = torch.randn(2, 16, 5, 4, requires_grad=True)
    ((conn(student, teacher) - teacher.detach()) ** 2).sum().backward()
    assert student.grad is not None and student.grad.abs().sum() > 0
    for name, param in conn.named_parameters():
        assert param.grad is not None and param.grad.abs().sum() > 0, name
    assert teacher.grad is None


def test_registry():
    conn = MODELS.build(dict(type='MLPConnector', in_channels=4,
                             out_channels=6))
    assert isinstance(conn, MLPConnector)
