"""Distances of :class:`ComposableLoss`: each takes the transformed (N, C,
H, W) tensors and the axes it sums over inside one compared vector, and
keeps those axes (size 1).

Paper: "KD-Zero: Evolving Knowledge Distiller for Any Teacher-Student Pairs",
Lujun Li et al., NeurIPS 2023 (https://openreview.net/forum?id=OlMKa5YZ8e),
supplementary material, appendix E.2 (distance functions, Eq. 8-12) and
Listing 3.
"""
from typing import Callable, Dict

import torch
import torch.nn.functional as F

from mmdistill.utils.tensor import check_values
from ..functional import kl_from_log_probs
from .transforms import _flat_softmax, _norm


def _elementwise(fn):

    def distance(s, t, axes):
        d = fn(s, t)
        return d.sum(dim=axes, keepdim=True) if axes else d

    return distance


def _kl(s, t, axes, inputs: str = 'logits', eps: float = 1e-12):
    """KL(teacher || student) of the distributions over ``axes``."""
    if not axes:
        raise ValueError('ComposableLoss: the kl distance needs dims, the '
                         'axes that form each distribution (e.g. "c" for '
                         'class logits, "hw" for CWD).')
    if inputs == 'logits':
        log_s = _flat_softmax(s, axes, log=True)
        log_t = _flat_softmax(t, axes, log=True)
    elif inputs == 'probs':
        log_s, log_t = s.clamp_min(eps).log(), t.clamp_min(eps).log()
        check_values(
            ((s.sum(dim=axes) - 1).abs() <= 1e-3).all(),
            'ComposableLoss: kl with inputs="probs" needs distributions '
            'over dims (softmax them first); with tau != 1 the '
            'probabilities are divided by tau and no longer sum to 1: '
            'use inputs="logits" for a tempered KL.')
    else:
        raise ValueError('kl inputs must be "logits" (softmax taken over '
                         f'dims) or "probs", got {inputs!r}.')
    return kl_from_log_probs(log_t, log_s, dim=axes, keepdim=True)


def _cosine(s, t, axes, eps: float = 1e-8, centre: bool = False):
    if not axes:
        raise ValueError('ComposableLoss: cosine and pearson distances need '
                         'dims, the axes of the compared vectors (e.g. "c").')
    if centre:
        s = s - s.mean(dim=axes, keepdim=True)
        t = t - t.mean(dim=axes, keepdim=True)
    dot = (s * t).sum(dim=axes, keepdim=True)
    norms = _norm(s, axes) * _norm(t, axes)
    return 1.0 - dot / norms.clamp_min(eps)


def _correlation(s, t, axes, alpha: float = 1.01, eps: float = 1e-8):
    """KD-Zero, supplementary Eq. 12: standardise every feature over the
    batch, take the diagonal of the student-teacher cross-correlation, and
    penalise its distance to 1: ``log2 sum_i |v_i - 1|^(2 alpha)``. As in
    the paper's listing the standard deviation is the unbiased one and ``v``
    divides by N, so ``v_i <= (N - 1) / N`` and identical inputs give a
    finite minimum (``log2(d * N^(-2 alpha))``), not minus infinity."""
    n = s.shape[0]
    if n < 2:
        raise ValueError('ComposableLoss: the correlation distance compares '
                         'features across the batch and needs a batch of at '
                         'least 2 samples per GPU.')
    s, t = s.reshape(n, -1), t.reshape(n, -1)
    s = (s - s.mean(0)) / (s.std(0) + eps)
    t = (t - t.mean(0)) / (t.std(0) + eps)
    v = (s * t).sum(0) / n
    return torch.log2((v - 1).abs().pow(2 * alpha).sum())


DISTANCES: Dict[str, Callable] = {
    'l1': _elementwise(lambda s, t: (s - t).abs()),
    'l2': _elementwise(lambda s, t: (s - t).pow(2)),
    'smooth_l1': _elementwise(
        lambda s, t: F.smooth_l1_loss(s, t, reduction='none')),
    'kl': _kl,
    'cosine': _cosine,
    'pearson': lambda s, t, axes, eps=1e-8: _cosine(s, t, axes, eps, True),
    'correlation': _correlation,
}
# Distances that compare the whole batch at once and return a scalar.
BATCH_DISTANCES = ('correlation', )
