"""Pixel-wise knowledge distillation on segmentation logits.

Papers: "Distilling the Knowledge in a Neural Network", Geoffrey Hinton et
al., 2015 (arXiv:1503.02531), the soft-target KD of Section 2 applied at
every pixel; as used by the angular-distillation paper, "Rethinking
Knowledge Distillation with Raw Features for Semantic Segmentation", Tao Liu
et al., WACV 2024 (https://openreview.net/forum?id=HwbEioBGLo3), the
``L_kd`` term of its Eq. 9.
"""
from typing import Optional, Sequence

import torch
import torch.nn as nn

from mmdistill.registry import MODELS
from mmdistill.utils.tensor import check_same_shape, upcast
from .functional import labels_at, softmax_kl


@MODELS.register_module()
class PixelKLDivergence(nn.Module):
    """Pixel-wise KL divergence between class distributions.

    At every pixel p the logits over the K classes become
    ``q_p(F) = softmax_k(F_:,p / tau)`` and::

        loss = loss_weight * tau^2 / |V|
               * sum_{p in V} sum_k q_p(T)_k * (log q_p(T)_k - log q_p(S)_k)

    i.e. KL(teacher || student) per pixel, averaged over the set V of valid
    pixels of the whole batch, times tau^2 (the conventional KD loss on
    logits, L_kd of the angular-distillation paper's Eq. 9, used there with
    lambda_kd = 10).

    Valid pixels: the ground-truth labels ``data_samples[i].gt_sem_seg.data``
    (mmseg ``SegDataSample``, shape (1, H', W')) are resized to the logits'
    H x W with nearest interpolation, and pixels whose label equals
    ``ignore_index`` are excluded. When ``data_samples`` is None, or a sample
    has no ``gt_sem_seg``, or ``ignore_index`` is None, those pixels are all
    valid. When no pixel is valid the loss is 0 (not NaN) and still
    back-propagates (a zero gradient).

    Args:
        tau (float): softmax temperature. Defaults to 1.0.
        loss_weight (float): weight of the loss. Defaults to 1.0.
        ignore_index (int, optional): label value of ignored pixels.
            Defaults to 255 (mmseg's).
    """

    def __init__(self,
                 tau: float = 1.0,
                 loss_weight: float = 1.0,
                 ignore_index: Optional[int] = 255) -> None:
        super().__init__()
        if tau <= 0:
            raise ValueError(f'PixelKLDivergence needs tau > 0, got {tau}.')
        self.tau = tau
        self.loss_weight = loss_weight
        self.ignore_index = ignore_index

    def _valid_mask(self, logits: torch.Tensor,
                    data_samples: Optional[Sequence]) -> torch.Tensor:
        """Return the (N, H, W) boolean mask of the pixels that count."""
        n, _, h, w = logits.shape
        valid = torch.ones((n, h, w), dtype=torch.bool, device=logits.device)
        if data_samples is None or self.ignore_index is None:
            return valid
        if len(data_samples) != n:
            raise ValueError(
                f'PixelKLDivergence got {len(data_samples)} data samples for '
                f'logits of batch size {n}: pass the data samples of the '
                'same batch.')
        for i, sample in enumerate(data_samples):
            label = labels_at(sample, (h, w), logits.device)
            if label is not None:
                valid[i] = label != self.ignore_index
        return valid

    def forward(self,
                student: torch.Tensor,
                teacher: torch.Tensor,
                data_samples: Optional[Sequence] = None) -> torch.Tensor:
        """Compute the weighted pixel-wise KL divergence.

        Args:
            student (torch.Tensor): student logits (N, K, H, W).
            teacher (torch.Tensor): teacher logits of the same shape; they
                are detached, no gradient reaches the teacher.
            data_samples (Sequence[SegDataSample], optional): one per image,
                their ``gt_sem_seg`` gives the ignored pixels.

        Returns:
            torch.Tensor: scalar loss, float32 for half-precision inputs.
        """
        check_same_shape(
            'PixelKLDivergence', student, teacher,
            'both must predict the same classes; resize the student '
            "logits to the teacher's size (or add a connector).")
        if student.dim() != 4:
            raise ValueError(
                'PixelKLDivergence needs logits shaped (N, K, H, W), got '
                f'{tuple(student.shape)}.')
        kl = softmax_kl(upcast(student), upcast(teacher.detach()), self.tau,
                        dim=1)  # (N, H, W)
        valid = self._valid_mask(student, data_samples)
        kl = torch.where(valid, kl, torch.zeros_like(kl))
        num_valid = valid.sum().clamp_min(1)
        return self.loss_weight * self.tau**2 * kl.sum() / num_valid
