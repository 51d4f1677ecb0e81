"""DIST: relation distillation of classifier predictions.

Paper: "Knowledge Distillation from A Stronger Teacher", Tao Huang, Shan
You, Fei Wang, Chen Qian, Chang Xu, NeurIPS 2022, arXiv:2205.10536.
Official code: hunto/DIST_KD (``classification/lib/models/losses/
dist_kd.py``).

Implemented (Section 3): with Y = softmax(Z / tau) the (B, C) prediction
matrix of a batch and rho_p the Pearson correlation coefficient,

* inter-class relation: L_inter = tau^2 / B * sum_i (1 - rho_p(Y^s_i,:,
  Y^t_i,:)), the correlation over the classes of each sample's prediction;
* intra-class relation: L_intra = tau^2 / C * sum_j (1 - rho_p(Y^s_:,j,
  Y^t_:,j)), the correlation over the batch of each class's probabilities;
* the distillation part of L_tr = alpha L_cls + beta L_inter + gamma
  L_intra, i.e. beta * L_inter + gamma * L_intra (L_cls is the student's
  own classification loss).

rho_p(u, v) = sum (u - mean u)(v - mean v) / (||u - mean u|| ||v - mean v||
+ eps), with eps = 1e-8 added to the product of the norms as in the
official code. A student whose probabilities are equal for every class (as
mmpretrain's ViT heads give at the start: their weights are initialised to
zero) has centred vectors of 0, where the Pearson terms' gradient is of
the order of 1/eps (about 1e6 on the logits at the first step); the official
code behaves the same. Gradient clipping (DeiT recipes set it) bounds that
step; the term is exact as soon as the logits differ.
"""
from typing import Optional

import torch
import torch.nn as nn

from mmdistill.registry import MODELS
from mmdistill.utils.tensor import upcast
from .kd import check_logits


def pearson_rows(a: torch.Tensor, b: torch.Tensor,
                 eps: float = 1e-8) -> torch.Tensor:
    """Pearson correlation of each row of ``a`` with the same row of ``b``
    (2-D tensors), ``eps`` added to the product of the centred norms."""
    a = a - a.mean(dim=1, keepdim=True)
    b = b - b.mean(dim=1, keepdim=True)
    return (a * b).sum(dim=1) / (a.norm(dim=1) * b.norm(dim=1) + eps)


@MODELS.register_module()
class DISTLoss(nn.Module):
    """DIST relation loss on logits (N, C).

    ``Y = softmax(logits / tau)`` per sample, then::

        inter = 1 - mean_n pearson_over_classes(Y^S[n, :], Y^T[n, :])
        intra = 1 - mean_c pearson_over_batch(Y^S[:, c], Y^T[:, c])
        loss  = loss_weight * tau^2 * (beta * inter + gamma * intra)

    Each term lies in [0, 2]; both are 0 (up to eps) when the student's
    probabilities are a positive affine map of the teacher's, per sample
    for the inter-class and per class for the intra-class term: DIST asks
    for the same relations, not the same values (the relaxation of KD's
    exact match that the paper is about).

    The intra-class relation compares each class's probabilities across the
    batch, so it needs at least 2 samples: with a batch of 1 the centred
    vectors are 0 and the term is the constant ``gamma * tau^2`` (no
    gradient), as in the official code. Like the official code the loss
    needs no labels; with mmpretrain's Mixup / CutMix batch augments the
    relations of the teacher's predictions on the mixed images are the
    target.

    The official ImageNet recipe (ResNet-34 -> ResNet-18) adds this loss
    with beta = gamma = 1, tau = 1 and a weight of 2 to the student's
    cross-entropy (weight 1)::

        distill=dict(logits=dict(
            student='head.fc', teacher='head.fc',
            loss=dict(type='DISTLoss', tau=1.0, beta=1.0, gamma=1.0,
                      loss_weight=2.0)))

    Args:
        tau (float): softmax temperature. Defaults to 1.0.
        beta (float): weight of the inter-class relation. Defaults to 1.0.
        gamma (float): weight of the intra-class relation. Defaults to 1.0.
        loss_weight (float): weight of the loss. Defaults to 1.0.
    """

    def __init__(self,
                 tau: float = 1.0,
                 beta: float = 1.0,
                 gamma: float = 1.0,
                 loss_weight: float = 1.0) -> None:
        super().__init__()
        if tau <= 0:
            raise ValueError(f'DISTLoss needs tau > 0, got {tau}.')
        self.tau = tau
        self.beta = beta
        self.gamma = gamma
        self.loss_weight = loss_weight

    def relations(self, student: torch.Tensor,
                  teacher: torch.Tensor) -> tuple:
        """The (inter, intra) relation losses, not yet multiplied by tau^2,
        beta, gamma or the weight."""
        y_s = torch.softmax(student / self.tau, dim=1)
        y_t = torch.softmax(teacher / self.tau, dim=1)
        inter = 1 - pearson_rows(y_s, y_t).mean()
        intra = 1 - pearson_rows(y_s.t(), y_t.t()).mean()
        return inter, intra

    def forward(self,
                student: torch.Tensor,
                teacher: torch.Tensor,
                data_samples: Optional[list] = None) -> torch.Tensor:
        """Compute the weighted DIST loss.

        Args:
            student (torch.Tensor): student logits (N, C).
            teacher (torch.Tensor): teacher logits (N, C); detached.
            data_samples (list, optional): unused (DIST needs no labels),
                accepted for the common loss signature.

        Returns:
            torch.Tensor: scalar loss, float32 for half-precision inputs.
        """
        check_logits('DISTLoss', student, teacher)
        inter, intra = self.relations(
            upcast(student), upcast(teacher.detach()))
        return self.loss_weight * self.tau**2 * (
            self.beta * inter + self.gamma * intra)
