"""Tests of MGDConnector (Masked Generative Distillation)."""
import pytest
import torch

from mmdistill.connectors import MGDConnector
from mmdistill.masks import random_channel_mask, random_spatial_mask
from mmdistill.registry import MODELS


def rel_err(a, b):
    return ((a - b).norm() / b.norm()).item()


def conv_ref(x, conv):
    weight = conv.weight.detach()
    kh, kw = weight.shape[-2:]
    n, c, h, w = x.shape
    padded = torch.zeros(n, c, h + kh - 1, w + kw - 1, dtype=x.dtype)
    padded[:, :, kh // 2:kh // 2 + h, kw // 2:kw // 2 + w] = x
    out = torch.zeros(n, weight.shape[0], h, w, dtype=x.dtype)
    for i in range(kh):
        for j in range(kw):
            out += torch.einsum('oc,nchw->nohw', weight[:, :, i, j],
                                padded[:, :, i:i + h, j:j + w])
    return out + conv.bias.detach()[None, :, None, None]


def reference(conn, x, mask=None):
    """``conv3x3(ReLU(conv3x3(align(x) * mask)))``."""
    if conn.align is not None:
        x = conv_ref(x, conn.align)
    if mask is not None:
        x = x * mask
    x = torch.clamp(conv_ref(x, conn.generation[0]), min=0)
    return conv_ref(x, conn.generation[2])


@pytest.mark.parametrize('in_c,out_c,n,size', [
    (256, 256, 2, (8, 6)),   # FPN level: no align conv
    (6, 10, 1, (5, 7)),      # channel mismatch: 1x1 align, batch 1
])
@pytest.mark.parametrize('mask_type', ['spatial', 'channel'])
def test_train_value_with_its_mask(in_c, out_c, n, size, mask_type):
    torch.manual_seed(0)
    conn = MGDConnector(in_c, out_c, mask_type=mask_type).double()
    assert (conn.align is None) == (in_c == out_c)
    x = torch.randn(n, in_c, *size, dtype=torch.float64)
    torch.manual_seed(123)
    out = conn(x)
    mask = conn.last_mask
    expected_shape = (n, 1, *size) if mask_type == 'spatial' else \
        (n, out_c, 1, 1)
    assert mask.shape == expected_shape and mask.dtype == torch.float64
    assert set(mask.unique().tolist()) <= {0.0, 1.0}
    assert out.dtype == torch.float64 and out.shape == (n, out_c, *size)
    assert rel_err(out, reference(conn, x, mask)) <= 1e-6
    # the mask is the library's random mask drawn from the global generator
    torch.manual_seed(123)
    if mask_type == 'spatial':
        again = random_spatial_mask(n, size[0], size[1], 0.65)
    else:
        again = random_channel_mask(n, out_c, 0.65)
    assert torch.equal(again.double(), mask)


def test_eval_mode_does_not_mask():
    torch.manual_seed(0)
    conn = MGDConnector(6, 10).double().eval()
    x = torch.randn(2, 6, 5, 4, dtype=torch.float64)
    out = conn(x)
    assert conn.last_mask is None
    assert rel_err(out, reference(conn, x)) <= 1e-6
    # eval output is deterministic, the training output is not
    assert torch.equal(conn(x), out)
    conn.train()
    assert not torch.allclose(conn(x), out)


@pytest.mark.parametrize('ratio', [0.65, 0.45, 0.75])
def test_spatial_mask_ratio_statistics(ratio):
    torch.manual_seed(1)
    conn = MGDConnector(2, 2, mask_ratio=ratio)
    conn(torch.randn(4, 2, 64, 64))
    mask = conn.last_mask
    masked = 1 - mask.mean().item()
    # 16384 Bernoulli draws: std 0.004, tolerance 5 std
    assert abs(masked - ratio) < 0.02
    # the same positions are masked in every channel
    assert mask.shape == (4, 1, 64, 64)


def test_channel_mask_ratio_statistics():
    torch.manual_seed(2)
    conn = MGDConnector(4, 512, mask_ratio=0.5, mask_type='channel')
    conn(torch.randn(32, 4, 1, 1))
    mask = conn.last_mask
    assert mask.shape == (32, 512, 1, 1)
    assert abs((1 - mask.mean().item()) - 0.5) < 0.02


def test_masked_positions_get_no_gradient():
    torch.manual_seed(0)
    conn = MGDConnector(4, 6, mask_ratio=0.5)
    student = torch.randn(2, 4, 6, 6, requires_grad=True)
    teacher = torch.randn(2, 6, 6, 6, requires_grad=True)
    ((conn(student, teacher) - teacher.detach()) ** 2).sum().backward()
    mask = conn.last_mask.expand_as(student)
    assert (student.grad[mask == 0] == 0).all()
    assert (student.grad[mask == 1] != 0).all()
    for name, param in conn.named_parameters():
        assert param.grad is not None and param.grad.abs().sum() > 0, name
    assert teacher.grad is None


def test_zero_ratio_and_fpn_levels():
    conn = MGDConnector(256, 256, mask_ratio=0.0)
    for size in [(16, 12), (8, 6), (4, 3), (2, 2), (1, 1)]:
        assert conn(torch.randn(2, 256, *size)).shape == (2, 256, *size)
        assert conn.last_mask is None


def test_bad_arguments_and_registry():
    with pytest.raises(ValueError):
        MGDConnector(4, 4, mask_type='random')
    with pytest.raises(ValueError):
        MGDConnector(4, 4, mask_ratio=1.5)
    conn = MODELS.build(dict(type='MGDConnector', in_channels=4,
                             out_channels=8, mask_ratio=0.75))
    assert conn.mask_ratio == 0.75
