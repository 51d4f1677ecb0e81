"""Feature L2 loss, summed and divided by the batch size.

Paper: "A Simple and Generic Framework for Feature Distillation via
Channel-wise Transformation", Ziwei Liu, Yongtao Wang, Xiaojie Chu et al.,
ICCV Workshops 2023 (arXiv:2303.13212), the MLP-connector paper.
Implemented: Section 3.2, Eq. 3 (``L_feat``, the squared differences
summed) divided by the batch size as in Algorithm 1, weighted by alpha as in
Eq. 4 (Section 3.3).
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
    batch size N (MLP-connector paper, Eq. 3 and Algorithm 1: alpha is 2e-5
    for one-stage detectors, 5e-7 two-stage, 2e-5 / 1e-5 segmentation).

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
