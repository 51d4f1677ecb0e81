"""Kernels shared by several losses."""
from typing import Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F


def kl_from_log_probs(log_p: torch.Tensor,
                      log_q: torch.Tensor,
                      dim: Union[int, Sequence[int]],
                      keepdim: bool = False) -> torch.Tensor:
    """KL(p || q) = sum p * (log p - log q) along ``dim``.

    Args:
        log_p (torch.Tensor): log-probabilities of the reference
            distribution p (the teacher's).
        log_q (torch.Tensor): log-probabilities of q (the student's), same
            shape.
        dim (int | Sequence[int]): the axes that form each distribution.
        keepdim (bool): keep the summed axes with size 1.

    Returns:
        torch.Tensor: the divergence per distribution.
    """
    return (log_p.exp() * (log_p - log_q)).sum(dim=dim, keepdim=keepdim)


def softmax_kl(student: torch.Tensor, teacher: torch.Tensor, tau: float,
               dim: int) -> torch.Tensor:
    """KL(softmax(T / tau) || softmax(S / tau)) along ``dim``.

    Returns:
        torch.Tensor: the divergence per slice, ``dim`` summed out (not yet
        multiplied by tau^2).
    """
    return kl_from_log_probs(
        F.log_softmax(teacher / tau, dim=dim),
        F.log_softmax(student / tau, dim=dim), dim)


def labels_at(sample, size: Tuple[int, int],
              device: Optional[torch.device] = None
              ) -> Optional[torch.Tensor]:
    """A sample's segmentation ground truth at the logits' size.

    Args:
        sample: an mmseg ``SegDataSample``; its ``gt_sem_seg`` (a
            ``PixelData`` or a tensor, (1, H', W') or (H', W')) is read.
        size (tuple[int, int]): the logits' (H, W).
        device (torch.device, optional): where the labels go.

    Returns:
        torch.Tensor | None: (H, W) int64 labels, resized with nearest
        interpolation (labels are small integers, exact in float32), or None
        when the sample has no ``gt_sem_seg``.
    """
    gt = getattr(sample, 'gt_sem_seg', None)
    if gt is None:
        return None
    label = gt.data if hasattr(gt, 'data') else gt
    label = label.to(device).reshape(1, 1, *label.shape[-2:]).float()
    return F.interpolate(label, size=tuple(size), mode='nearest')[0, 0].long()
