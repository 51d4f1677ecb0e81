"""Weightings of :class:`ComposableLoss`: each reads the untransformed
student and teacher tensors as logits with classes on axis 1 (N, K) or (N,
K, H, W) and returns a weight of shape (N, 1, H, W), never differentiated,
and the positions the mean runs over (None: all; focal: the labelled ones).

Paper: "KD-Zero: Evolving Knowledge Distiller for Any Teacher-Student Pairs",
Lujun Li et al., NeurIPS 2023 (https://openreview.net/forum?id=OlMKa5YZ8e),
supplementary material, appendix E.3 (loss weights calibration, Eq. 13) and
Listing 4.
"""
from typing import Callable, Dict, Optional

import torch
import torch.nn.functional as F

from mmdistill.utils.tensor import check_values
from ..functional import labels_at


def _labels(data_samples, shape, ignore_index: int) -> torch.Tensor:
    """Ground-truth class per sample (mmpretrain ``gt_label``) or per pixel
    (mmseg ``gt_sem_seg``, resized nearest), as (N, 1, H, W) long; pixels
    labelled ``ignore_index`` are -1 (class labels are never ignored)."""
    n, _, h, w = shape
    if data_samples is None or len(data_samples) != n:
        raise ValueError(
            'ComposableLoss: the focal weighting needs the ground truth of '
            'the batch (data_samples with gt_label or gt_sem_seg); got '
            f'{None if data_samples is None else len(data_samples)} samples '
            f'for a batch of {n}.')
    out = []
    for sample in data_samples:
        label = labels_at(sample, (h, w))
        if label is not None:
            label = label.masked_fill(label == ignore_index, -1)
        elif getattr(sample, 'gt_label', None) is not None:
            label = torch.as_tensor(sample.gt_label).reshape(-1)[:1]
            label = label.long().reshape(1, 1).expand(h, w)
        else:
            raise ValueError(
                'ComposableLoss: the focal weighting needs gt_label '
                '(classification) or gt_sem_seg (segmentation) in every '
                'data sample; detection data samples carry neither. Use '
                'another weighting for detectors.')
        out.append(label)
    labels = torch.stack(out)[:, None]
    check_values(
        labels.max() < shape[1],
        f'ComposableLoss: the focal weighting reads the tensors as logits of '
        f'{shape[1]} classes, but a ground-truth label is larger: use it on '
        'class logits (e.g. decode_head.conv_seg, head.fc) of the dataset\'s '
        'classes.')
    return labels


def _teacher_entropy(s, t, data_samples):
    """Entropy of the teacher's class distribution, divided by log K
    (in [0, 1]): uncertain teacher predictions weigh more. (The paper's
    Listing 4 uses the teacher's squared standard deviation under this
    name; this follows its text, "the entropy of the teacher's
    knowledge".)"""
    if t.shape[1] < 2:
        raise ValueError('ComposableLoss: teacher_entropy needs logits of at '
                         f'least 2 classes on axis 1, got {t.shape[1]}.')
    log_p = F.log_softmax(t, dim=1)
    entropy = -(log_p.exp() * log_p).sum(dim=1, keepdim=True)
    return entropy / torch.log(torch.tensor(float(t.shape[1]))), None


def _confidence(s, t, data_samples):
    """The teacher's confidence: its largest class probability. (Listing 4
    uses ``1 - CE`` of the student; this follows the text, "the confidence
    level of the teacher's model knowledge".)"""
    return F.softmax(t, dim=1).amax(dim=1, keepdim=True), None


def _similarity(s, t, data_samples, eps: float = 1e-8):
    """Cosine similarity of the student and teacher vectors along axis 1,
    clamped at 0 (Listing 4 uses it unclamped: a negative weight would push
    the student away from the teacher)."""
    weight = F.cosine_similarity(s, t, dim=1, eps=eps)[:, None]
    return weight.clamp_min(0), None


def _focal(s, t, data_samples, ignore_index: int = 255, eps: float = 1e-7):
    """KD-Zero, supplementary Eq. 13 (after WSLD): ``1 - exp(-CE_s /
    CE_t)`` with the cross-entropies of student and teacher against the
    ground truth; ignored pixels weigh 0."""
    labels = _labels(data_samples, s.shape, ignore_index).to(s.device)
    valid = labels >= 0
    index = labels.clamp_min(0)
    ce_s = -F.log_softmax(s, dim=1).gather(1, index)
    ce_t = -F.log_softmax(t, dim=1).gather(1, index)
    ratio = (ce_s / (ce_t + eps)).clamp_min(0)
    return (1 - torch.exp(-ratio)) * valid, valid


WEIGHTINGS: Dict[str, Optional[Callable]] = {
    'none': None,
    'teacher_entropy': _teacher_entropy,
    'confidence': _confidence,
    'similarity': _similarity,
    'focal': _focal,
}
