"""Feature L2 loss of paper 001 (``shared/papers/001_cc5401afd166de35.txt``).
"""
from typing import Optional

import torch
import torch.nn as nn

from mmdistill.registry import MODELS
from mmdistill.utils.tensor import check_same_shape, upcast


@MODELS.register_module()
class L2Loss(nn.Module):
    """``loss = loss_weight * sum((S - T)^2) / N``.

    The squared differences are summed over every element and divided by the
    batch size N (paper 001, Eq. 3 and Algorithm 1: alpha is 2e-5 for
    one-stage detectors, 5e-7 two-stage, 2e-5 / 1e-5 segmentation).

    Args:
        loss_weight (float): alpha. Defaults to 1.0.
    """

    def __init__(self, loss_weight: float = 1.0) -> None:
        super().__init__()
        self.loss_weight = loss_weight

    def forward(self,
                student: torch.Tensor,
                teacher: torch.Tensor,
                data_samples: Optional[list] = None) -> torch.Tensor:
        check_same_shape('L2Loss', student, teacher)
        diff = upcast(student) - upcast(teacher.detach())
        return self.loss_weight * diff.pow(2).sum() / student.shape[0]
