"""Magnitude distillation.

Paper: "Rethinking Knowledge Distillation with Raw Features for Semantic
Segmentation", Tao Liu, Chenshu Chen, Xi Yang, Wenming Tan, WACV 2024
(https://openreview.net/forum?id=HwbEioBGLo3), the angular-distillation
paper. Implemented: Section 3.1, the magnitude distillation ``L_md`` of
Eq. 4 (the magnitude term of the decomposition of the naive feature loss,
Eq. 3).
"""
from typing import Optional

import torch
import torch.nn as nn

from mmdistill.registry import MODELS
from mmdistill.utils.tensor import check_same_shape, upcast


@MODELS.register_module()
class MagnitudeLoss(nn.Module):
    """Magnitude distillation, Eq. 4 of the angular-distillation paper.

    For each sample i, with ``F_i`` its whole C x H x W feature seen as one
    vector and ``N_e = C*H*W`` its number of elements::

        L_md(i) = (||F_i^t|| - ||F_i^s||)^2 / N_e
        loss    = loss_weight * mean_i L_md(i)

    This is the first (magnitude) term of the decomposition of the naive
    FitNets loss, Eq. 3 of the angular-distillation paper, where
    the paper writes N for C*H*W; Eq. 4 is per sample and the batch is
    averaged. The Euclidean norm has a zero (not NaN) gradient at an
    all-zero feature.

    Args:
        loss_weight (float): weight the batch mean is multiplied by.
            Defaults to 1.0.
    """

    def __init__(self, loss_weight: float = 1.0) -> None:
        super().__init__()
        self.loss_weight = loss_weight

    def forward(self,
                student: torch.Tensor,
                teacher: torch.Tensor,
                data_samples: Optional[list] = None) -> torch.Tensor:
        """Compute the weighted magnitude loss.

        Args:
            student (torch.Tensor): student feature (N, C, H, W) or any shape
                whose first dimension is the batch.
            teacher (torch.Tensor): teacher feature of the same shape; it is
                detached, no gradient reaches the teacher.
            data_samples (list, optional): unused, accepted for the common
                loss signature.

        Returns:
            torch.Tensor: scalar loss, float32 for half-precision inputs.
        """
        check_same_shape(
            'MagnitudeLoss', student, teacher,
            'add a connector (e.g. 1x1 conv + BN + ReLU) that maps the '
            "student to the teacher's channels and size.")
        s = upcast(student).flatten(1)
        t = upcast(teacher.detach()).flatten(1)
        num_elements = s.shape[1]
        s_norm = torch.linalg.vector_norm(s, dim=1)
        t_norm = torch.linalg.vector_norm(t, dim=1)
        per_sample = (t_norm - s_norm).pow(2) / num_elements
        return self.loss_weight * per_sample.mean()
