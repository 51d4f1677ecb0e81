"""Tests of NonLocalConnector (the "Non-Local" ablation of the MLP-connector
paper, Liu et al., ICCV-W 2023)."""
import pytest
import torch

from mmdistill.connectors import NonLocalConnector
from mmdistill.registry import MODELS


def rel_err(a, b):
    return ((a - b).norm() / b.norm()).item()


def conv1x1(conv, x):
    out = torch.einsum('oc,nchw->nohw', conv.weight.detach()[:, :, 0, 0], x)
    if conv.bias is not None:
        out = out + conv.bias.detach()[None, :, None, None]
    return out


def reference(conn, x):
    """Embedded-Gaussian non-local block, then the 1x1 projection."""
    block = conn.non_local
    n, c, h, w = x.shape
    theta = conv1x1(block.theta.conv, x).reshape(n, -1, h * w)
    phi = conv1x1(block.phi.conv, x).reshape(n, -1, h * w)
    g = conv1x1(block.g.conv, x).reshape(n, -1, h * w)
    inter = theta.shape[1]
    logits = torch.einsum('nci,ncj->nij', theta, phi) / inter ** 0.5
    attn = torch.exp(logits - logits.amax(dim=-1, keepdim=True))
    attn = attn / attn.sum(dim=-1, keepdim=True)
    y = torch.einsum('nij,ncj->nci', attn, g).reshape(n, inter, h, w)
    z = x + conv1x1(block.conv_out.conv, y)
    if isinstance(conn.proj, torch.nn.Conv2d):
        z = conv1x1(conn.proj, z)
    return z


@pytest.mark.parametrize('in_c,out_c,n,size', [
    (256, 256, 2, (8, 6)),     # FPN level, same channels: no projection
    (512, 2048, 1, (4, 4)),    # PSPNet stage 4, projection, batch 1
    (6, 10, 3, (1, 1)),        # 1x1 map
])
def test_value_against_einsum(in_c, out_c, n, size):
    torch.manual_seed(0)
    conn = NonLocalConnector(in_c, out_c, zeros_init=False).double()
    with torch.no_grad():  # make the block's contribution non-negligible
        conn.non_local.conv_out.conv.weight.normal_(0, 0.5)
        for m in (conn.non_local.theta, conn.non_local.phi):
            m.conv.weight.normal_(0, 0.3)
    x = torch.randn(n, in_c, *size, dtype=torch.float64)
    out = conn(x)
    assert out.dtype == torch.float64 and out.shape == (n, out_c, *size)
    expected = reference(conn, x)
    assert rel_err(out, expected) <= 1e-6
    assert isinstance(conn.proj, torch.nn.Conv2d) == (in_c != out_c)
    if in_c == out_c:  # the block really changes the feature
        assert rel_err(out, x) > 1e-3


def test_zero_init_starts_as_identity_plus_projection():
    conn = NonLocalConnector(8, 8)
    conn.init_weights()
    x = torch.randn(2, 8, 5, 5)
    assert torch.allclose(conn(x), x)


def test_gradients_student_and_params_not_teacher():
    torch.manual_seed(0)
    conn = NonLocalConnector(8, 12, zeros_init=False)
    conn.init_weights()
    student = torch.randn(2, 8, 4, 5, requires_grad=True)
    teacher = torch.randn(2, 12, 4, 5, requires_grad=True)
    ((conn(student, teacher) - teacher.detach()) ** 2).sum().backward()
    assert student.grad is not None and student.grad.abs().sum() > 0
    for name, param in conn.named_parameters():
        assert param.grad is not None and param.grad.abs().sum() > 0, name
    assert teacher.grad is None


def test_registry():
    conn = MODELS.build(dict(type='NonLocalConnector', in_channels=4,
                             out_channels=4))
    assert isinstance(conn.proj, torch.nn.Identity)
