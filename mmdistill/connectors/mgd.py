"""Masked Generative Distillation connector (MGD).

Paper: "Masked Generative Distillation", Zhendong Yang et al., ECCV 2022
(arXiv:2205.01529), Section 3: the student feature, masked by a random mask
``M``, goes through the generation block ``G`` (3x3 conv, ReLU, 3x3 conv) and
``G(S * M)`` is matched to the teacher feature with the summed squared
error.
"""
from typing import Optional

import torch
import torch.nn as nn
from mmengine.model import BaseModule

from mmdistill.masks import (check_ratio, random_channel_mask,
                             random_spatial_mask)
from mmdistill.registry import MODELS

_MASK_TYPES = ('spatial', 'channel')


@MODELS.register_module()
class MGDConnector(BaseModule):
    """Randomly mask the (aligned) student, then generate the teacher.

    ``S' = G(align(S) * M)`` with ``G = conv3x3 -> ReLU -> conv3x3`` at the
    teacher's channels (padding 1, with bias), ``align`` a 1x1 conv that
    exists only when the student and teacher channels differ, and ``M`` a
    random binary mask (``mmdistill.masks``): ``mask_type='spatial'`` zeroes
    each position of each image (all channels) with probability
    ``mask_ratio`` (MGD's lambda: 0.65 one-stage detectors, the default;
    0.45 two-stage; 0.75 segmentation), ``mask_type='channel'`` zeroes whole
    channels instead (MGD's classification variant). The MGD loss is then
    ``alpha * sum((S' - T)^2) / N`` (``MGDLoss``).

    The mask is drawn from torch's global random generator and applied only
    in training mode; in eval mode ``S' = G(align(S))``. The last mask is
    kept in ``self.last_mask`` (``None`` when no mask was applied).

    Args:
        in_channels (int): Channels of the student feature.
        out_channels (int): Channels of the teacher feature.
        mask_ratio (float): Probability in ``[0, 1]`` that a position (or
            channel) is masked. Defaults to 0.65.
        mask_type (str): ``'spatial'`` or ``'channel'``. Defaults to
            ``'spatial'``.
        init_cfg (dict, optional): mmengine init config.
    """

    def __init__(self,
                 in_channels: int,
                 out_channels: int,
                 mask_ratio: float = 0.65,
                 mask_type: str = 'spatial',
                 init_cfg: Optional[dict] = None) -> None:
        super().__init__(init_cfg=init_cfg)
        if mask_type not in _MASK_TYPES:
            raise ValueError(
                f'mask_type must be one of {_MASK_TYPES}, got {mask_type!r}')
        check_ratio(mask_ratio)
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.mask_ratio = mask_ratio
        self.mask_type = mask_type
        self.align = (
            nn.Conv2d(in_channels, out_channels, 1)
            if in_channels != out_channels else None)
        self.generation = nn.Sequential(
            nn.Conv2d(out_channels, out_channels, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(out_channels, out_channels, 3, padding=1))
        self.last_mask: Optional[torch.Tensor] = None

    def forward(self,
                student: torch.Tensor,
                teacher: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Mask (in training mode) and generate the teacher feature.

        Args:
            student (torch.Tensor): Student feature ``(N, C_s, H, W)``.
            teacher (torch.Tensor, optional): Unused.

        Returns:
            torch.Tensor: The generated feature ``(N, C_t, H, W)``.
        """
        x = self.align(student) if self.align is not None else student
        self.last_mask = None
        if self.training and self.mask_ratio > 0:
            n, c, h, w = x.shape
            if self.mask_type == 'spatial':
                mask = random_spatial_mask(
                    n, h, w, self.mask_ratio, device=x.device)
            else:
                mask = random_channel_mask(
                    n, c, self.mask_ratio, device=x.device)
            mask = mask.to(x.dtype)
            self.last_mask = mask
            x = x * mask
        return self.generation(x)


__all__ = ['MGDConnector']
