"""Angular distillation: LAD, CAD and PAD.

Paper: "Rethinking Knowledge Distillation with Raw Features for Semantic
Segmentation", Tao Liu, Chenshu Chen, Xi Yang, Wenming Tan, WACV 2024
(https://openreview.net/forum?id=HwbEioBGLo3), the angular-distillation
paper. Implemented: Section 3.2, the layer-wise (LAD, Eq. 5), channel-wise
(CAD, Eq. 7) and point-wise (PAD, Eq. 8) angular distillation losses.
"""
from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from mmdistill.registry import MODELS
from mmdistill.utils.tensor import check_same_shape, upcast


@MODELS.register_module()
class AngularLoss(nn.Module):
    """Angular distillation (LAD, CAD or PAD), Eq. 5, 7 and 8 of the
    angular-distillation paper (Liu et al., WACV 2024).

    Features are L2-normalised along the chosen vectors, then the squared
    differences of the unit vectors are summed. For one sample with feature
    ``F`` of shape C x H x W:

    * ``mode='layer'`` (LAD, Eq. 5): the whole C*H*W feature is one vector,
      ``L = sum_chw (F^s / ||F^s|| - F^t / ||F^t||)^2 = 2 - 2 cos``.
    * ``mode='channel'`` (CAD, Eq. 7): each channel's H*W map is a vector,
      ``L = 1/C sum_c sum_hw (F^s_chw / ||F^s_c::|| - F^t_chw /
      ||F^t_c::||)^2 = 1/C sum_c (2 - 2 cos_c)``.
    * ``mode='point'`` (PAD, Eq. 8): each position's C-vector is a vector,
      ``L = 1/(H*W) sum_hw sum_c (F^s_chw / ||F^s_:hw|| - F^t_chw /
      ||F^t_:hw||)^2 = 1/(H*W) sum_hw (2 - 2 cos_hw)``.

    ``loss = loss_weight * mean over the batch of L`` (the paper uses
    lambda_ad = 10). Because only directions are compared the loss is 0
    whenever S = c*T for any c > 0.

    Norms are clamped below by ``eps`` (as ``torch.nn.functional.normalize``
    does), so an all-zero vector is normalised to the zero vector instead of
    producing NaN: its term is then ``||other unit vector||^2`` (1, or 0 when
    both are zero), and gradients stay finite.

    Args:
        mode (str): ``'layer'`` (LAD), ``'channel'`` (CAD) or ``'point'``
            (PAD). Defaults to ``'layer'``.
        loss_weight (float): weight the batch mean is multiplied by.
            Defaults to 1.0.
        eps (float): lower bound of the norms. Defaults to 1e-12.
    """

    MODES = ('layer', 'channel', 'point')

    def __init__(self,
                 mode: str = 'layer',
                 loss_weight: float = 1.0,
                 eps: float = 1e-12) -> None:
        super().__init__()
        if mode not in self.MODES:
            raise ValueError(
                f'AngularLoss mode must be one of {self.MODES} (LAD, CAD, '
                f'PAD of the angular-distillation paper), got {mode!r}.')
        self.mode = mode
        self.loss_weight = loss_weight
        self.eps = eps

    def forward(self,
                student: torch.Tensor,
                teacher: torch.Tensor,
                data_samples: Optional[list] = None) -> torch.Tensor:
        """Compute the weighted angular distillation loss.

        Args:
            student (torch.Tensor): student feature (N, C, H, W); any
                (N, C, *spatial) works, the spatial dimensions are
                flattened (a 2-D (N, C) input has a single position).
            teacher (torch.Tensor): teacher feature of the same shape; it is
                detached, no gradient reaches the teacher.
            data_samples (list, optional): unused, accepted for the common
                loss signature.

        Returns:
            torch.Tensor: scalar loss, float32 for half-precision inputs.
        """
        check_same_shape(
            'AngularLoss', student, teacher,
            'add a connector (e.g. 1x1 conv + BN + ReLU, as the angular-'
            "distillation paper does) that maps the student to the "
            "teacher's channels and size.")
        if student.dim() < 2:
            raise ValueError(
                'AngularLoss needs features shaped (N, C, *spatial), got '
                f'shape {tuple(student.shape)}.')
        n, c = student.shape[:2]
        # (N, C, P) with P the number of spatial positions.
        s = upcast(student).reshape(n, c, -1)
        t = upcast(teacher.detach()).reshape(n, c, -1)
        if self.mode == 'layer':
            s = F.normalize(s.reshape(n, -1), dim=1, eps=self.eps)
            t = F.normalize(t.reshape(n, -1), dim=1, eps=self.eps)
            per_sample = (s - t).pow(2).sum(dim=1)
        else:
            # channel: vectors over positions; point: vectors over channels.
            dim = 2 if self.mode == 'channel' else 1
            s = F.normalize(s, dim=dim, eps=self.eps)
            t = F.normalize(t, dim=dim, eps=self.eps)
            # Sum inside each vector, average over the vectors.
            per_sample = (s - t).pow(2).sum(dim=dim).mean(dim=1)
        return self.loss_weight * per_sample.mean()
