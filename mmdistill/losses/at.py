"""Attention transfer (AT), a common feature-distillation baseline.

Paper: "Paying More Attention to Attention: Improving the Performance of
Convolutional Neural Networks via Attention Transfer", Sergey Zagoruyko,
Nikos Komodakis, ICLR 2017 (arXiv:1612.03928). Implemented: Section 3.1,
activation-based attention transfer (the attention map ``mean_c |F|^p`` and
the distance of the L2-normalised maps of student and teacher).
"""
from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from mmdistill.registry import MODELS
from mmdistill.utils.tensor import upcast


@MODELS.register_module()
class ATLoss(nn.Module):
    """Activation-based attention transfer.

    The attention map of a feature F (N, C, H, W) is the channel mean of
    ``|F|^p``, flattened and L2-normalised per sample::

        a(F)_n = vec(mean_c |F_n,c|^p) / ||vec(mean_c |F_n,c|^p)||_2
        loss   = loss_weight * mean_n ||a(S)_n - a(T)_n||_2^2

    The variant used: the squared L2 distance of the normalised maps, summed
    over the H*W positions and averaged over the batch (so each term equals
    2 - 2 cos of the two maps). The authors' code averages over the
    positions too, ``(a_s - a_t).pow(2).mean()``; that equals this loss
    with ``loss_weight`` divided by H*W. Student and teacher may have
    different channel counts; batch and spatial sizes must match.

    Args:
        p (float): exponent of the activations. Defaults to 2.
        loss_weight (float): weight of the loss. Defaults to 1.0.
        eps (float): lower bound of the map norms (an all-zero map stays
            zero instead of NaN). Defaults to 1e-12.
    """

    #: the attention maps average over channels: student and teacher
    #: channels may differ
    same_channels = False

    def __init__(self,
                 p: float = 2,
                 loss_weight: float = 1.0,
                 eps: float = 1e-12) -> None:
        super().__init__()
        self.p = p
        self.loss_weight = loss_weight
        self.eps = eps

    def attention(self, x: torch.Tensor) -> torch.Tensor:
        """Return the (N, H*W) normalised attention map of ``x``.

        Args:
            x (torch.Tensor): feature (N, C, *spatial).

        Returns:
            torch.Tensor: one unit vector per sample.
        """
        att = x.abs().pow(self.p).mean(dim=1).reshape(x.shape[0], -1)
        return F.normalize(att, dim=1, eps=self.eps)

    def forward(self,
                student: torch.Tensor,
                teacher: torch.Tensor,
                data_samples: Optional[list] = None) -> torch.Tensor:
        """Compute the weighted attention transfer loss.

        Args:
            student (torch.Tensor): student feature (N, C_s, H, W).
            teacher (torch.Tensor): teacher feature (N, C_t, H, W); it is
                detached, no gradient reaches the teacher.
            data_samples (list, optional): unused, accepted for the common
                loss signature.

        Returns:
            torch.Tensor: scalar loss, float32 for half-precision inputs.
        """
        if (student.dim() < 3 or student.dim() != teacher.dim()
                or student.shape[0] != teacher.shape[0]
                or student.shape[2:] != teacher.shape[2:]):
            raise ValueError(
                f'ATLoss needs (N, C, H, W) features with the same batch and '
                f'spatial size, got student {tuple(student.shape)} and '
                f'teacher {tuple(teacher.shape)}: resize the student (a '
                'connector or pooling) to the teacher\'s spatial size; the '
                'channels may differ.')
        a_s = self.attention(upcast(student))
        a_t = self.attention(upcast(teacher.detach()))
        return self.loss_weight * (a_s - a_t).pow(2).sum(dim=1).mean()
