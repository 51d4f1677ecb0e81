"""Tests of TokenProjector (the projector of ViT attention distillation,
AttnDistill)."""
import math

import pytest
import torch
import torch.nn as nn

from mmdistill.connectors import TokenProjector
from mmdistill.registry import MODELS


def _layer_norm(row, weight, bias, eps=1e-6):
    mean = sum(row) / len(row)
    var = sum((v - mean)**2 for v in row) / len(row)
    return [(v - mean) / math.sqrt(var + eps) * w + b
            for v, w, b in zip(row, weight, bias)]


def _gelu(v):
    return 0.5 * v * (1 + math.erf(v / math.sqrt(2)))


def reference(conn, token):
    """One token (a list of floats) through the projector's layers, by
    loops: LayerNorm, Linear/GELU..., Linear, LayerNorm."""
    row = list(token)
    for layer in conn.mlp:
        if isinstance(layer, nn.LayerNorm):
            row = _layer_norm(row, layer.weight.tolist(), layer.bias.tolist())
        elif isinstance(layer, nn.Linear):
            weight, bias = layer.weight.tolist(), layer.bias.tolist()
            row = [sum(w * v for w, v in zip(weights, row)) + b
                   for weights, b in zip(weight, bias)]
        else:
            assert isinstance(layer, nn.GELU)
            row = [_gelu(v) for v in row]
    return row


def test_default_is_the_authors_four_layer_projector():
    # DeiT-tiny (192) -> DeiT-small (384): LN, 192-384-192-384-384, LN
    conn = TokenProjector(192, 384)
    kinds = [type(m).__name__ for m in conn.mlp]
    assert kinds == ['LayerNorm', 'Linear', 'GELU', 'Linear', 'GELU',
                     'Linear', 'GELU', 'Linear', 'LayerNorm']
    linears = [m for m in conn.mlp if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [
        (192, 384), (384, 192), (192, 384), (384, 384)]
    assert conn.mlp[0].eps == 1e-6 and conn.mlp[-1].normalized_shape == (384,)


@pytest.mark.parametrize('kwargs,shape', [
    (dict(), (2, 6)),
    (dict(num_layers=1, norm_in=False), (1, 6)),
    (dict(hidden_channels=[5, 7], num_layers=3, norm_out=False), (3, 6)),
    (dict(hidden_channels=4, num_layers=2), (2, 6)),
])
def test_value_against_loops(kwargs, shape):
    torch.manual_seed(0)
    conn = TokenProjector(6, 9, **kwargs).double()
    for m in conn.mlp:  # non-trivial norm parameters
        if isinstance(m, nn.LayerNorm):
            nn.init.normal_(m.weight)
            nn.init.normal_(m.bias)
    x = torch.randn(*shape, dtype=torch.float64)
    out = conn(x)
    assert out.shape == (shape[0], 9) and out.dtype == torch.float64
    ref = torch.tensor([reference(conn, row.tolist()) for row in x],
                       dtype=torch.float64)
    assert ((out - ref).norm() / ref.norm()).item() <= 1e-6


def test_token_index_takes_the_class_token():
    torch.manual_seed(1)
    conn = TokenProjector(8, 12, token_index=0).double()
    tokens = torch.randn(2, 5, 8, dtype=torch.float64)
    out = conn(tokens)
    assert out.shape == (2, 12)
    assert torch.allclose(out, conn(tokens[:, 0]))
    # without token_index every token is projected
    every = TokenProjector(8, 12).double()
    every.load_state_dict(conn.state_dict())
    out = every(tokens)
    assert out.shape == (2, 5, 12)
    assert torch.allclose(out[:, 3], conn(tokens[:, 3]))


def test_gradients_student_and_params_not_teacher():
    conn = TokenProjector(8, 16, token_index=0)
    student = torch.randn(2, 5, 8, requires_grad=True)
    teacher = torch.randn(2, 16, requires_grad=True)
    ((conn(student, teacher) - teacher.detach())**2).mean().backward()
    assert teacher.grad is None
    assert student.grad[:, 0].abs().sum() > 0
    assert student.grad[:, 1:].abs().sum() == 0
    for name, param in conn.named_parameters():
        assert param.grad is not None and param.grad.abs().sum() > 0, name


def test_clear_errors():
    with pytest.raises(ValueError,
                       match=r'\(N, 8\) or \(N, L, 8\).*\(2, 5, 6'):
        TokenProjector(8, 16)(torch.randn(2, 5, 6))
    with pytest.raises(ValueError, match='in_channels'):
        TokenProjector(8, 16)(torch.randn(2, 8, 4, 4))
    with pytest.raises(ValueError, match='lists 1 widths.*3 hidden'):
        TokenProjector(8, 16, hidden_channels=[4])
    with pytest.raises(ValueError, match='num_layers >= 1'):
        TokenProjector(8, 16, num_layers=0)


def test_registry_build():
    conn = MODELS.build(dict(type='TokenProjector', in_channels=192,
                             out_channels=384, token_index=0))
    assert isinstance(conn, TokenProjector) and conn.token_index == 0
    assert conn(torch.randn(1, 197, 192)).shape == (1, 384)
