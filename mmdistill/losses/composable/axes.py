"""Axis names of :class:`ComposableLoss`: every tensor is handled as (N, C,
H, W) and axes are named by letters of ``nchw``."""
from typing import Optional, Tuple, Union

import torch

_AXES = 'nchw'
Spec = Union[str, dict]


def parse_dims(dims: Optional[str], owner: str) -> Tuple[int, ...]:
    """``'hw'`` -> ``(2, 3)``: axis letters of ``nchw`` to axis indices."""
    if dims is None or dims == '':
        return ()
    if (not isinstance(dims, str) or any(d not in _AXES for d in dims)
            or len(set(dims)) != len(dims)):
        raise ValueError(
            f'{owner}: dims must be distinct letters of "nchw" (batch, '
            f'channel, height, width), e.g. "hw" or "chw"; got {dims!r}.')
    return tuple(sorted(_AXES.index(d) for d in dims))


def _as_4d(x: torch.Tensor, side: str) -> torch.Tensor:
    if x.dim() == 2:
        return x[:, :, None, None]
    if x.dim() == 3:
        return x[..., None]
    if x.dim() == 4:
        return x
    raise ValueError(
        f'ComposableLoss takes (N, C), (N, C, L) or (N, C, H, W) tensors; '
        f'the {side} has shape {tuple(x.shape)}.')
