"""Element-mean squared error, the loss of the TaT distillation.

Paper: "Knowledge Distillation via the Target-aware Transformer", Sihao Lin
et al., CVPR 2022 (arXiv:2205.10793). Implemented: Section 3, the mean
squared error between the student feature reconfigured by the target-aware
transformer and the teacher feature (the connector is ``TaTConnector``).
With ``TokenProjector`` it is also the class-token alignment loss of
AttnDistill (Kai Wang et al., BMVC 2022, arXiv:2210.00944).
"""
from typing import Optional

import torch
import torch.nn as nn

from mmdistill.registry import MODELS
from mmdistill.utils.tensor import check_same_shape, upcast
from .functional import mean_squared_error


@MODELS.register_module()
class MSELoss(nn.Module):
    """``loss = loss_weight * mean((S - T)^2)``.

    The squared differences are averaged over every element (N*C*H*W of
    them), the mean squared error between the reconfigured student S' and
    the teacher T used by the target-aware transformer (TaT). Unlike
    :class:`L2Loss`
    (sum / N), the value does not grow with the feature size.

    Args:
        loss_weight (float): weight the mean is multiplied by.
            Defaults to 1.0.
    """

    def __init__(self, loss_weight: float = 1.0) -> None:
        super().__init__()
        self.loss_weight = loss_weight

    def forward(self,
                student: torch.Tensor,
                teacher: torch.Tensor,
                data_samples: Optional[list] = None) -> torch.Tensor:
        """Compute the weighted mean squared error.

        Args:
            student (torch.Tensor): student feature, any shape.
            teacher (torch.Tensor): teacher feature of the same shape; it is
                detached, no gradient reaches the teacher.
            data_samples (list, optional): unused, accepted for the common
                loss signature.

        Returns:
            torch.Tensor: scalar loss, float32 for half-precision inputs.
        """
        check_same_shape('MSELoss', student, teacher)
        # one fused kernel each way: the backward makes one map, not the
        # difference, its power and their product (or none: see
        # mean_squared_error)
        return self.loss_weight * mean_squared_error(
            upcast(student), upcast(teacher.detach()))
