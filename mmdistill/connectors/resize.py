"""Bringing a student feature map to the teacher's spatial size: the
``resize=dict(mode=...)`` key of any connector config.

``distill.<pair>.connector=dict(type=..., resize=dict(mode='bilinear'))``:
before the connector runs, a student map ``(N, C, H_s, W_s)`` whose size
differs from the teacher's ``(H_t, W_t)`` is resized to it:

* ``'bilinear'`` (``align_corners=False`` unless given) or ``'nearest'``:
  ``torch.nn.functional.interpolate``, up or down;
* ``'pool'``: adaptive average pooling, down only (each teacher cell gets
  the mean of the student cells it covers).

Without ``resize`` a size mismatch stops with a message naming the key.
"""
from typing import Optional, Sequence

import torch
import torch.nn.functional as F

RESIZE_MODES = ('bilinear', 'nearest', 'pool')


def check_resize(resize, where: str) -> Optional[dict]:
    """Validate a ``resize`` config (None, or a dict with ``mode`` and, for
    ``'bilinear'``, optionally ``align_corners``)."""
    if resize is None:
        return None
    allowed = {'mode', 'align_corners'}
    if not isinstance(resize, dict) or resize.get('mode') not in \
            RESIZE_MODES or set(resize) - allowed or (
                'align_corners' in resize and resize['mode'] != 'bilinear'):
        raise ValueError(
            f"{where}.resize must be dict(mode='bilinear'|'nearest'|'pool') "
            "(align_corners only with 'bilinear'); got "
            f'{resize!r}.')
    return dict(resize)


def resize_to(student: torch.Tensor, size: Sequence[int], mode: str,
              align_corners: bool = False,
              where: str = 'connector') -> torch.Tensor:
    """``student`` (N, C, H, W) at spatial ``size``; unchanged when it has
    that size already or is not a 4-d map. Shapes only: no host sync."""
    size = tuple(int(s) for s in size)
    if student.dim() != 4 or tuple(student.shape[-2:]) == size:
        return student
    if mode == 'pool':
        if any(s > h for s, h in zip(size, student.shape[-2:])):
            raise ValueError(
                f"{where}.resize mode 'pool' only shrinks, but the student "
                f'map {tuple(student.shape[-2:])} is smaller than the '
                f"teacher's {size}: use mode='bilinear' or 'nearest'.")
        return F.adaptive_avg_pool2d(student, size)
    if mode == 'bilinear':
        return F.interpolate(student, size=size, mode='bilinear',
                             align_corners=align_corners)
    return F.interpolate(student, size=size, mode='nearest')
