"""Channel-wise distillation (CWD).

Paper: "Channel-wise Knowledge Distillation for Dense Prediction", Changyong
Shu et al., ICCV 2021 (arXiv:2011.13256). Implemented: Section 3, the
channel distribution distillation loss (each channel's activation map made a
distribution over positions by a softmax at temperature tau, teacher and
student compared by the KL divergence, times tau^2, averaged over the
channels). The angular-distillation paper (Liu et al., WACV 2024) compares
against it.
"""
from typing import Optional

import torch
import torch.nn as nn

from mmdistill.registry import MODELS
from mmdistill.utils.tensor import check_same_shape, upcast
from .functional import softmax_kl


@MODELS.register_module()
class ChannelWiseDivergence(nn.Module):
    """Channel-wise divergence (CWD).

    Each channel's H*W map is turned into a distribution over positions,
    ``phi(F)_c = softmax_hw(F_c / tau)``, and the teacher's distribution is
    matched by the student's::

        loss = loss_weight * tau^2 / (N*C)
               * sum_{n,c} sum_hw phi(T)_nc,hw
                 * (log phi(T)_nc,hw - log phi(S)_nc,hw)

    i.e. KL(teacher || student) per channel, summed over batch and channels,
    times tau^2 and divided by N*C (settings in use: tau = 1 weight 5 on
    PSPNet logits, tau = 4 weight 3, tau = 1 weight 10 per FPN level).
    Works on features and on logits. Zero when S = T.

    Args:
        tau (float): softmax temperature. Defaults to 1.0.
        loss_weight (float): weight of the loss. Defaults to 1.0.
    """

    def __init__(self, tau: float = 1.0, loss_weight: float = 1.0) -> None:
        super().__init__()
        if tau <= 0:
            raise ValueError(
                f'ChannelWiseDivergence needs tau > 0, got {tau}.')
        self.tau = tau
        self.loss_weight = loss_weight

    def forward(self,
                student: torch.Tensor,
                teacher: torch.Tensor,
                data_samples: Optional[list] = None) -> torch.Tensor:
        """Compute the weighted channel-wise divergence.

        Args:
            student (torch.Tensor): student feature or logits (N, C, H, W);
                any (N, C, *spatial) works, the spatial dimensions are
                flattened.
            teacher (torch.Tensor): teacher tensor of the same shape; it is
                detached, no gradient reaches the teacher.
            data_samples (list, optional): unused, accepted for the common
                loss signature.

        Returns:
            torch.Tensor: scalar loss, float32 for half-precision inputs.
        """
        check_same_shape('ChannelWiseDivergence', student, teacher)
        if student.dim() < 3:
            raise ValueError(
                'ChannelWiseDivergence needs (N, C, H, W) tensors, got shape '
                f'{tuple(student.shape)}.')
        n, c = student.shape[:2]
        kl = softmax_kl(
            upcast(student).reshape(n * c, -1),
            upcast(teacher.detach()).reshape(n * c, -1), self.tau,
            dim=1).sum()
        return self.loss_weight * kl * self.tau**2 / (n * c)
