"""Tests of ConvConnector: the MLP-connector paper's conv3x3-ReLU-conv3x3
(Liu et al., ICCV-W 2023) and the angular-distillation paper's 1x1 conv + BN
+ ReLU alignment (Liu et al., WACV 2024)."""
import pytest
import torch

from mmdistill.connectors import ConvConnector
from mmdistill.registry import MODELS


def rel_err(a, b):
    return ((a - b).norm() / b.norm()).item()


def conv_ref(x, weight, bias):
    """Stride-1 'same' convolution as a sum of shifted einsums."""
    n, c, h, w = x.shape
    kh, kw = weight.shape[-2:]
    padded = torch.zeros(n, c, h + kh - 1, w + kw - 1, dtype=x.dtype)
    padded[:, :, kh // 2:kh // 2 + h, kw // 2:kw // 2 + w] = x
    out = torch.zeros(n, weight.shape[0], h, w, dtype=x.dtype)
    for i in range(kh):
        for j in range(kw):
            out += torch.einsum('oc,nchw->nohw', weight[:, :, i, j],
                                padded[:, :, i:i + h, j:j + w])
    if bias is not None:
        out += bias[None, :, None, None]
    return out


def bn_train_ref(x, bn):
    """BatchNorm with the batch's biased statistics over (N, H, W)."""
    mean = x.mean(dim=(0, 2, 3), keepdim=True)
    var = ((x - mean) ** 2).mean(dim=(0, 2, 3), keepdim=True)
    y = (x - mean) / torch.sqrt(var + bn.eps)
    return y * bn.weight.detach()[None, :, None, None] + \
        bn.bias.detach()[None, :, None, None]


def get(t):
    return None if t is None else t.detach()


@pytest.mark.parametrize('in_c,out_c,hidden,n,size', [
    (256, 256, None, 2, (8, 6)),   # FPN level of a 64 x 48 input
    (16, 24, None, 1, (5, 7)),     # channel mismatch, batch 1
    (16, 24, 8, 3, (1, 1)),        # 1x1 map (FPN P7), hidden width
])
def test_conv3x3_relu_conv3x3_value(in_c, out_c, hidden, n, size):
    torch.manual_seed(0)
    conn = ConvConnector(in_c, out_c, hidden_channels=hidden).double()
    x = torch.randn(n, in_c, *size, dtype=torch.float64)
    out = conn(x)
    first, second = conn.convs[0].conv, conn.convs[1].conv
    assert first.kernel_size == (3, 3) and second.kernel_size == (3, 3)
    expected = conv_ref(
        torch.clamp(conv_ref(x, get(first.weight), get(first.bias)), min=0),
        get(second.weight), get(second.bias))
    assert out.dtype == torch.float64 and out.shape == (n, out_c, *size)
    assert rel_err(out, expected) <= 1e-6
    # the last conv has no activation: negative outputs survive
    assert (out < 0).any()


def test_angular_paper_align_train_and_eval():
    """1x1 conv + BN + ReLU, PSPNet stage 4: 512 -> 2048 channels."""
    torch.manual_seed(0)
    conn = ConvConnector(512, 2048, kernel_size=1, num_convs=1,
                         norm_cfg=dict(type='BN'), last_norm_act=True)
    conn = conn.double()
    layer = conn.convs[0]
    assert layer.conv.bias is None  # bias='auto' drops it before BN
    with torch.no_grad():
        layer.norm.weight.uniform_(0.5, 1.5)
        layer.norm.bias.uniform_(-0.5, 0.5)
    x = torch.randn(2, 512, 4, 5, dtype=torch.float64)
    out = conn(x)
    pre = conv_ref(x, get(layer.conv.weight), None)
    expected = torch.clamp(bn_train_ref(pre, layer.norm), min=0)
    assert out.shape == (2, 2048, 4, 5)
    assert rel_err(out, expected) <= 1e-6
    assert (out == 0).any() and (out >= 0).all()

    conn.eval()
    out = conn(x)
    bn = layer.norm
    normed = (pre - bn.running_mean[None, :, None, None]) / torch.sqrt(
        bn.running_var[None, :, None, None] + bn.eps)
    expected = torch.clamp(
        normed * get(bn.weight)[None, :, None, None] +
        get(bn.bias)[None, :, None, None], min=0)
    assert rel_err(out, expected) <= 1e-6


def test_gradients_student_and_params_not_teacher():
    torch.manual_seed(0)
    conn = ConvConnector(8, 16, norm_cfg=dict(type='BN'))
    student = torch.randn(1, 8, 6, 5, requires_grad=True)
    teacher = torch.randn(1, 16, 6, 5, requires_grad=True)
    ((conn(student, teacher) - teacher.detach()) ** 2).sum().backward()
    assert student.grad is not None and student.grad.abs().sum() > 0
    for name, param in conn.named_parameters():
        assert param.grad is not None and param.grad.abs().sum() > 0, name
    assert teacher.grad is None


def test_arguments_checked_and_registry():
    with pytest.raises(ValueError):
        ConvConnector(4, 4, kernel_size=2)
    with pytest.raises(ValueError):
        ConvConnector(4, 4, num_convs=0)
    conn = MODELS.build(
        dict(type='ConvConnector', in_channels=4, out_channels=6,
             num_convs=3, kernel_size=5))
    assert len(conn.convs) == 3
    assert conn(torch.randn(2, 4, 7, 3)).shape == (2, 6, 7, 3)
