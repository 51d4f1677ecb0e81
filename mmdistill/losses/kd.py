"""Knowledge distillation on classifier logits (KD).

Paper: "Distilling the Knowledge in a Neural Network", Geoffrey Hinton,
Oriol Vinyals, Jeff Dean, 2015 (NIPS 2014 Deep Learning Workshop),
arXiv:1503.02531. Implemented: the soft-target objective of Section 2, the
cross-entropy between the teacher's and the student's softmax at
temperature T, written as the KL divergence (it differs from the
cross-entropy by the teacher's entropy, a constant for the student), and
multiplied by T^2 as Section 2 prescribes so that its gradient keeps the
scale of the hard-target loss when T changes::

    L_KD = T^2 / N * sum_n sum_c p^T_nc (log p^T_nc - log p^S_nc),
    p_n = softmax(z_n / T)

The hard-target term (the student's cross-entropy with the labels) is not
part of this loss: the student's own classification loss provides it.
"""
from typing import Optional

import torch
import torch.nn as nn

from mmdistill.registry import MODELS
from mmdistill.utils.tensor import check_same_shape, upcast
from .functional import softmax_kl


def check_logits(owner: str, student: torch.Tensor,
                 teacher: torch.Tensor) -> None:
    """Raise a ``ValueError`` unless ``student`` and ``teacher`` are
    classifier logits of one shape (N, C) with C >= 2."""
    check_same_shape(
        owner, student, teacher,
        fix='student and teacher must predict the same classes (tap both '
        "classifiers' logits, e.g. 'head.fc').")
    if student.dim() != 2 or student.shape[1] < 2:
        raise ValueError(
            f'{owner} takes classifier logits of shape (N, C) with C >= 2 '
            f'classes, got {tuple(student.shape)}: tap the classification '
            "head's output ('head.fc' of an mmpretrain LinearClsHead, or "
            "'head'); for per-pixel logits use PixelKLDivergence or "
            'ChannelWiseDivergence.')


@MODELS.register_module()
class KDLoss(nn.Module):
    """Hinton et al.'s knowledge distillation loss on logits (N, C).

    ::

        loss = loss_weight * tau^2 / N
               * sum_n KL(softmax(t_n / tau) || softmax(s_n / tau))

    summed over the C classes, averaged over the N samples. It is zero when
    the student's logits equal the teacher's (or differ from them by a
    constant per sample), and its gradient with respect to the student's
    logits is ``loss_weight * tau / N * (softmax(s / tau) - softmax(t /
    tau))``.

    The loss needs no labels. With mmpretrain's Mixup / CutMix batch
    augments (soft ``gt_score`` labels) it is unchanged: the teacher's
    prediction on the mixed image is the target.

    Example (a ResNet-18 student of a ResNet-34 teacher)::

        distill=dict(logits=dict(
            student='head.fc', teacher='head.fc',
            loss=dict(type='KDLoss', tau=1.0, loss_weight=0.5)))

    Args:
        tau (float): softmax temperature T. Defaults to 1.0.
        loss_weight (float): weight of the loss. Defaults to 1.0.
    """

    def __init__(self, tau: float = 1.0, loss_weight: float = 1.0) -> None:
        super().__init__()
        if tau <= 0:
            raise ValueError(f'KDLoss needs tau > 0, got {tau}.')
        self.tau = tau
        self.loss_weight = loss_weight

    def forward(self,
                student: torch.Tensor,
                teacher: torch.Tensor,
                data_samples: Optional[list] = None) -> torch.Tensor:
        """Compute the weighted KD loss.

        Args:
            student (torch.Tensor): student logits (N, C).
            teacher (torch.Tensor): teacher logits (N, C); detached.
            data_samples (list, optional): unused (KD needs no labels),
                accepted for the common loss signature.

        Returns:
            torch.Tensor: scalar loss, float32 for half-precision inputs.
        """
        check_logits('KDLoss', student, teacher)
        kl = softmax_kl(upcast(student), upcast(teacher.detach()), self.tau,
                        dim=1)
        return self.loss_weight * self.tau**2 * kl.mean()
