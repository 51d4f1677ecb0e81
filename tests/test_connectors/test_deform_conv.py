"""Tests of DeformConvConnector (the "Deformable 3x3" ablation of
the MLP-connector paper, Liu et al., ICCV-W 2023)."""
import pytest
import torch

from mmdistill.connectors import DeformConvConnector
from mmdistill.registry import MODELS


def rel_err(a, b):
    return ((a - b).norm() / b.norm()).item()


def conv3x3_ref(x, weight, bias):
    n, c, h, w = x.shape
    padded = torch.zeros(n, c, h + 2, w + 2, dtype=x.dtype)
    padded[:, :, 1:h + 1, 1:w + 1] = x
    out = torch.zeros(n, weight.shape[0], h, w, dtype=x.dtype)
    for i in range(3):
        for j in range(3):
            out += torch.einsum('oc,nchw->nohw', weight[:, :, i, j],
                                padded[:, :, i:i + h, j:j + w])
    return out + bias[None, :, None, None]


def bilinear_zero_pad(x, py, px):
    """Sample ``x`` (N, C, H, W) at real positions ``py, px`` (N, H', W').

    Bilinear interpolation of the four neighbouring pixels; pixels outside
    the map count as zero.
    """
    n, c, h, w = x.shape
    y0 = torch.floor(py)
    x0 = torch.floor(px)
    out = torch.zeros(n, c, *py.shape[1:], dtype=x.dtype)
    flat = x.reshape(n, c, h * w)
    for dy in (0, 1):
        for dx in (0, 1):
            yy = y0 + dy
            xx = x0 + dx
            weight = (1 - (py - yy).abs()) * (1 - (px - xx).abs())
            valid = (yy >= 0) & (yy <= h - 1) & (xx >= 0) & (xx <= w - 1)
            index = (yy.clamp(0, h - 1) * w + xx.clamp(0, w - 1)).long()
            gathered = torch.gather(
                flat, 2, index.reshape(n, 1, -1).expand(n, c, -1))
            gathered = gathered.reshape(n, c, *py.shape[1:])
            out += gathered * (weight * valid)[:, None]
    return out


def deform_ref(layer, x, modulated):
    """DCN 3x3 / pad 1 / stride 1 with one offset group, tap by tap."""
    n, _, h, w = x.shape
    raw = conv3x3_ref(x, layer.conv_offset.weight.detach(),
                      layer.conv_offset.bias.detach())
    offset = raw[:, :18]
    mask = torch.sigmoid(raw[:, 18:27]) if modulated else None
    weight = layer.weight.detach()
    out = torch.zeros(n, weight.shape[0], h, w, dtype=x.dtype)
    rows = torch.arange(h, dtype=x.dtype)[None, :, None]
    cols = torch.arange(w, dtype=x.dtype)[None, None, :]
    for k in range(9):
        i, j = divmod(k, 3)
        py = rows - 1 + i + offset[:, 2 * k]
        px = cols - 1 + j + offset[:, 2 * k + 1]
        sampled = bilinear_zero_pad(x, py, px)
        if modulated:
            sampled = sampled * mask[:, k][:, None]
        out += torch.einsum('oc,nchw->nohw', weight[:, :, i, j], sampled)
    if modulated:
        out += layer.bias.detach()[None, :, None, None]
    return out


def randomise_offsets(conn, scale=0.3):
    with torch.no_grad():
        for layer in (conn.dcn1, conn.dcn2):
            layer.conv_offset.weight.normal_(0, scale)
            layer.conv_offset.bias.uniform_(-1.5, 1.5)


@pytest.mark.parametrize('modulated', [False, True])
@pytest.mark.parametrize('in_c,out_c,n,size', [
    (6, 10, 2, (5, 7)),   # channel mismatch
    (8, 8, 1, (4, 4)),    # batch 1
    (4, 6, 3, (3, 2)),    # batch not dividing mmcv's im2col_step
    (5, 4, 2, (1, 1)),    # FPN P7: map smaller than the kernel
    (4, 4, 2, (2, 2)),    # FPN P6
])
def test_value_against_bilinear_reference(modulated, in_c, out_c, n, size):
    torch.manual_seed(0)
    conn = DeformConvConnector(in_c, out_c, modulated=modulated).double()
    randomise_offsets(conn)
    x = torch.randn(n, in_c, *size, dtype=torch.float64)
    out = conn(x)
    hidden = torch.clamp(deform_ref(conn.dcn1, x, modulated), min=0)
    expected = deform_ref(conn.dcn2, hidden, modulated)
    assert out.dtype == torch.float64 and out.shape == (n, out_c, *size)
    assert rel_err(out, expected) <= 1e-6


def test_zero_offsets_at_init_is_conv3x3_stack():
    torch.manual_seed(0)
    conn = DeformConvConnector(4, 5).double()
    x = torch.randn(2, 4, 6, 5, dtype=torch.float64)
    zero = torch.zeros(5, dtype=torch.float64)
    expected = conv3x3_ref(
        torch.clamp(conv3x3_ref(x, conn.dcn1.weight.detach(), zero[:5]),
                    min=0), conn.dcn2.weight.detach(), zero)
    assert rel_err(conn(x), expected) <= 1e-6


def test_large_batch_not_divisible_by_im2col_step():
    conn = DeformConvConnector(2, 3)
    assert conn(torch.randn(34, 2, 3, 3)).shape == (34, 3, 3, 3)


def test_fpn_levels():
    """Five FPN levels (strides 8-128 of a 128 x 96 input), 256 channels."""
    conn = DeformConvConnector(256, 256)
    for size in [(16, 12), (8, 6), (4, 3), (2, 2), (1, 1)]:
        assert conn(torch.randn(2, 256, *size)).shape == (2, 256, *size)


def test_pspnet_stage4_shapes():
    conn = DeformConvConnector(512, 2048, hidden_channels=256)
    out = conn(torch.randn(1, 512, 4, 4))
    assert out.shape == (1, 2048, 4, 4)


def test_gradients_student_and_params_not_teacher():
    torch.manual_seed(0)
    conn = DeformConvConnector(4, 6)
    randomise_offsets(conn)
    student = torch.randn(2, 4, 5, 5, requires_grad=True)
    teacher = torch.randn(2, 6, 5, 5, requires_grad=True)
    ((conn(student, teacher) - teacher.detach()) ** 2).sum().backward()
    assert student.grad is not None and student.grad.abs().sum() > 0
    for name, param in conn.named_parameters():
        assert param.grad is not None and param.grad.abs().sum() > 0, name
    assert teacher.grad is None


def test_registry():
    conn = MODELS.build(dict(type='DeformConvConnector', in_channels=3,
                             out_channels=4, modulated=True))
    assert conn.modulated
