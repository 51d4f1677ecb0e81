"""Transforms of :class:`ComposableLoss` (KD-Zero's transform search space):
each maps an (N, C, H, W) tensor to an (N', C', H', W') tensor.

Paper: "KD-Zero: Evolving Knowledge Distiller for Any Teacher-Student Pairs",
Lujun Li et al., NeurIPS 2023 (https://openreview.net/forum?id=OlMKa5YZ8e),
supplementary material, appendix E.1 (knowledge transformations, Eq. 1-7) and
Listing 2.
"""
from typing import Callable, Dict, Sequence

import torch
import torch.nn.functional as F

from mmdistill.masks import channel_attention, spatial_attention
from .axes import parse_dims


def _signed_sqrt(x, eps: float = 1e-12):
    # clamped so that the gradient at an exact 0 (after a ReLU) is finite
    return x.sign() * x.abs().clamp_min(eps).sqrt()


def _signed_log(x, eps: float = 1e-9):
    return x.sign() * torch.log(x.abs() + eps)


def _l2_normalize(x, dims: str = 'chw', eps: float = 1e-12):
    axes = parse_dims(dims, 'l2_normalize')
    return x / _norm(x, axes).clamp_min(eps)


def _norm(x, axes):
    """L2 norm over ``axes`` (kept); its gradient at a zero vector is 0, not
    NaN (unlike ``pow(2).sum().sqrt()``)."""
    return torch.linalg.vector_norm(x, dim=axes, keepdim=True)


def _softmax(x, dims: str = 'c'):
    return _flat_softmax(x, parse_dims(dims, 'softmax'), log=False)


def _log_softmax(x, dims: str = 'c'):
    return _flat_softmax(x, parse_dims(dims, 'log_softmax'), log=True)


def _flat_softmax(x, axes, log: bool):
    """Softmax over several axes at once (their elements form one vector)."""
    if not axes:
        raise ValueError('softmax needs at least one axis in dims.')
    rest = [a for a in range(4) if a not in axes]
    moved = x.permute(*rest, *axes)
    flat = moved.reshape(*moved.shape[:len(rest)], -1)
    out = (F.log_softmax if log else F.softmax)(flat, dim=-1)
    order = rest + list(axes)
    return out.reshape(moved.shape).permute(
        *[order.index(a) for a in range(4)])


def _spatial_attention(x, tau: float = 0.5):
    return spatial_attention(x, tau)[:, None]


def _channel_attention(x, tau: float = 0.5):
    return channel_attention(x, tau)[:, :, None, None]


def _pool(x, ratio: int = 2, mode: str = 'max'):
    pool = {'max': F.max_pool2d, 'avg': F.avg_pool2d}[_pool_mode(mode)]
    return pool(x, kernel_size=ratio, stride=ratio, ceil_mode=True)


def _multi_scale(x, scales: Sequence[int] = (1, 2, 4), mode: str = 'max'):
    pool = {'max': F.adaptive_max_pool2d,
            'avg': F.adaptive_avg_pool2d}[_pool_mode(mode)]
    n, c = x.shape[:2]
    cells = [pool(x, int(s)).reshape(n, c, -1) for s in scales]
    return torch.cat(cells, dim=2)[:, :, None]


def _pool_mode(mode):
    if mode not in ('max', 'avg'):
        raise ValueError(f'pooling mode must be "max" or "avg", got {mode!r}')
    return mode


def _local(x, size: int = 2):
    n, c, h, w = x.shape
    if h % size or w % size:
        raise ValueError(
            f'local: a {h}x{w} map does not split into {size}x{size} '
            'patches; pick a size that divides both sides (or pool first).')
    x = x.reshape(n, c, h // size, size, w // size, size)
    return x.permute(0, 1, 2, 4, 3, 5).reshape(n, -1, size, size)


def _gram(x, over: str = 'channel'):
    n, c = x.shape[:2]
    if over == 'channel':
        flat = x.reshape(n, c, -1)
        return torch.bmm(flat, flat.transpose(1, 2))[..., None]
    if over == 'sample':
        flat = x.reshape(n, -1)
        return (flat @ flat.t())[:, :, None, None]
    raise ValueError(f'gram: over must be "channel" (C x C per sample) or '
                     f'"sample" (N x N over the batch), got {over!r}.')


TRANSFORMS: Dict[str, Callable] = {
    # elementwise functions
    'abs': torch.abs,
    'relu': F.relu,
    'leaky_relu': F.leaky_relu,
    'sigmoid': torch.sigmoid,
    'tanh': torch.tanh,
    'swish': F.silu,
    'mish': F.mish,
    'exp': torch.exp,
    'square': torch.square,
    'pow': lambda x, p=4: x.pow(p),
    'sqrt': _signed_sqrt,
    'log': _signed_log,
    'scale': lambda x: (x + 1.0) / 2.0,
    # norms and softmaxes over chosen axes
    'l2_normalize': _l2_normalize,
    'softmax': _softmax,
    'log_softmax': _log_softmax,
    # attention maps (FGD's A_S and A_C)
    'spatial_attention': _spatial_attention,
    'channel_attention': _channel_attention,
    # spatial structure
    'pool': _pool,
    'multi_scale': _multi_scale,
    'local': _local,
    'gram': _gram,
}
# Transforms that apply to the student only.
STUDENT_ONLY = ('random_mask', )
