"""Kernels shared by several losses."""
from typing import Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable

from mmdistill.utils.tensor import gradients_in_place_allowed


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


class _SquaredError(torch.autograd.Function):
    """``sum_c w_c (a - b + o)^2`` per position; keeps ``a`` and ``b`` (and
    the small ``w``, ``o``) for the backward, not their difference."""

    @staticmethod
    def forward(ctx, a, b, weight, offset):
        ctx.save_for_backward(a, b, weight, offset)
        diff = a - b
        if offset is not None:
            diff += offset
        diff.mul_(diff)
        if weight is not None:
            diff.mul_(weight)
        return diff.sum(dim=1)

    @staticmethod
    def backward(ctx, grad):
        a, b, weight, offset = ctx.saved_tensors
        need_a, need_b, need_w, need_o = ctx.needs_input_grad
        diff = a - b
        if offset is not None:
            diff += offset
        grad = grad.unsqueeze(1)
        grad_w = None
        if need_w:
            grad_w = (diff * diff * grad).sum(dim=(2, 3), keepdim=True)
        grad_diff = diff.mul_(grad).mul_(2)
        if weight is not None:
            grad_diff.mul_(weight)
        grad_o = grad_diff.sum(dim=(2, 3), keepdim=True) if need_o else None
        return (grad_diff if need_a else None,
                -grad_diff if need_b else None, grad_w, grad_o)


def squared_error_map(a: torch.Tensor,
                      b: torch.Tensor,
                      weight: Optional[torch.Tensor] = None,
                      offset: Optional[torch.Tensor] = None) -> torch.Tensor:
    """``sum_c weight_c * (a - b + offset_c)^2`` at every position.

    The same values and gradients as writing it out with tensor operations,
    but the backward keeps ``a`` and ``b`` (which a distillation loss's
    student and teacher features keep alive anyway) instead of a full-size
    difference map: one map less held from the forward to the backward.

    Args:
        a (torch.Tensor): ``(N, C, H, W)``.
        b (torch.Tensor): ``(N, C, H, W)``.
        weight (torch.Tensor, optional): per-channel weights ``(N, C, 1, 1)``.
        offset (torch.Tensor, optional): per-channel offset ``(N, C, 1, 1)``
            added to the difference.

    Returns:
        torch.Tensor: ``(N, H, W)``.
    """
    return _SquaredError.apply(a, b, weight, offset)


class _MeanSquaredErrorInPlace(torch.autograd.Function):
    """``mean((a - b)^2)`` whose backward turns ``a`` into its gradient in
    place: only for an ``a`` that nothing else holds (see
    :func:`mean_squared_error`); ``b`` gets no gradient."""

    @staticmethod
    def forward(ctx, a, b):
        ctx.save_for_backward(a, b)
        ctx.done = False
        # in slices: F.mse_loss makes a full-size map of the squares first
        pieces = zip(a.reshape(-1).chunk(8), b.reshape(-1).chunk(8))
        total = sum(F.mse_loss(x, y, reduction='sum') for x, y in pieces)
        return total / a.numel()

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        if ctx.done:
            raise RuntimeError(
                'MSELoss: its backward ran twice (retain_graph) inside '
                'gradients_in_place(), where it turns its input into the '
                'gradient; run it outside that context to backpropagate '
                'twice.')
        ctx.done = True
        a, b = ctx.saved_tensors
        return a.sub_(b).mul_(grad * (2.0 / a.numel())), None


def output_is_private(x: torch.Tensor) -> bool:
    """Whether ``x`` is the output of an autograd function that declares
    (``private_output = True``) that it keeps no reference to it, e.g. TaT's
    patch-group attention; a loss that is its only user may then overwrite
    it in its backward."""
    forward_cls = getattr(x.grad_fn, '_forward_cls', None)
    return bool(getattr(forward_cls, 'private_output', False))


def mean_squared_error(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``F.mse_loss(a, b)`` (``b`` detached); the same value and gradient.

    Within :func:`mmdistill.utils.tensor.gradients_in_place` (the
    distiller runs each pair's connector and loss in it), when ``a`` is the
    private output of an autograd function (:func:`output_is_private`) of
    ``b``'s shape and dtype, the backward writes the gradient over ``a``
    instead of holding ``a`` and a new gradient map at once, and the
    forward sums the squares a slice at a time: one map less at the peak of
    either. ``a`` then holds the gradient after the backward, which runs
    once. Otherwise it is ``F.mse_loss``, which keeps ``a`` and ``b`` (held
    anyway) and makes one map in its backward.

    Args:
        a (torch.Tensor): The prediction.
        b (torch.Tensor): The target; gets no gradient.

    Returns:
        torch.Tensor: The 0-d mean.
    """
    b = b.detach()
    if (gradients_in_place_allowed() and torch.is_grad_enabled()
            and a.requires_grad and a.shape == b.shape
            and a.dtype == b.dtype and output_is_private(a)):
        return _MeanSquaredErrorInPlace.apply(a, b)
    return F.mse_loss(a, b)
