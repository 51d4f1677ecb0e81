"""Decoupled knowledge distillation (DKD) on classifier logits.

Paper: "Decoupled Knowledge Distillation", Borui Zhao, Quan Cui, Renjie
Song, Yiyu Qiu, Jiajun Liang, CVPR 2022, arXiv:2203.08679. Official code:
megvii-research/mdistiller (``mdistiller/distillers/DKD.py``).

Implemented (Section 3): with t the target class of a sample and
p = softmax(z / T) over the C classes,

* binary probabilities b = [p_t, 1 - p_t] (target vs. all other classes)
  and the distribution among the non-target classes
  p_hat_i = p_i / (1 - p_t), i != t;
* TCKD = KL(b^T || b^S) and NCKD = KL(p_hat^T || p_hat^S), so that the
  classical KD loss is KD = TCKD + (1 - p_t^T) * NCKD (Section 3.1);
* DKD = alpha * TCKD + beta * NCKD (Section 3.2), each term summed over
  the batch, divided by the batch size and multiplied by T^2 as in the
  official code, and optionally multiplied by the official linear warm-up
  factor.
"""
import warnings
from typing import Optional, Sequence

import torch
import torch.nn as nn

from mmdistill.registry import MODELS
from mmdistill.utils.tensor import check_values, upcast
from .functional import kl_from_log_probs
from .kd import check_logits


def dkd_targets(data_samples: Optional[Sequence], num_samples: int,
                num_classes: int, device) -> torch.Tensor:
    """The target class of each sample, as DKD needs a hard target.

    ``data_samples[i].gt_score`` (the soft label that mmpretrain's data
    preprocessor writes with Mixup / CutMix batch augments, or with
    ``to_onehot``) gives its argmax: the class with the larger share of
    the mixed image (a tie, such as a Mixup of lambda 0.5, goes to the
    lower class index). Without a score, ``data_samples[i].gt_label`` (one
    label) is the target.

    Returns:
        torch.Tensor: int64 targets (N,) on ``device``.
    """
    if data_samples is None:
        raise ValueError(
            'DKDLoss needs the ground-truth class of each sample: the '
            'distiller passes the batch data samples to a loss whose forward '
            'takes `data_samples`; call DKDLoss(student, teacher, '
            'data_samples=...) with samples that hold gt_label or gt_score.')
    if len(data_samples) != num_samples:
        raise ValueError(
            f'DKDLoss got {len(data_samples)} data samples for {num_samples} '
            'logits rows; they must be the same batch.')
    targets = []  # 0-d tensors: no device synchronisation per sample
    for i, sample in enumerate(data_samples):
        score = getattr(sample, 'gt_score', None)
        if score is not None:
            score = torch.as_tensor(score).flatten()
            if score.numel() != num_classes:
                raise ValueError(
                    f'DKDLoss: data sample {i} has a gt_score of '
                    f'{score.numel()} classes but the logits have '
                    f'{num_classes}.')
            targets.append(score.argmax())
            continue
        label = getattr(sample, 'gt_label', None)
        if label is None:
            raise ValueError(
                f'DKDLoss: data sample {i} has neither gt_label nor gt_score;'
                ' DKD needs the target class of every sample.')
        label = torch.as_tensor(label).flatten()
        if label.numel() != 1:
            raise ValueError(
                f'DKDLoss needs one target class per sample, data sample {i} '
                f'has {label.numel()} labels {label.tolist()} (multi-label '
                'data has no single target class).')
        targets.append(label[0])
    if not targets:
        return torch.zeros(0, dtype=torch.long, device=device)
    targets = torch.stack([t.to(device=device, dtype=torch.long)
                           for t in targets])
    check_values(
        ((targets >= 0) & (targets < num_classes)).all(),
        f'DKDLoss: a target class is outside the {num_classes} classes of '
        'the logits: tap the classifier of the dataset\'s classes.')
    return targets


def current_iter() -> Optional[int]:
    """The training iteration mmengine's Runner is running (0-based), from
    the current MessageHub, or None outside a Runner."""
    from mmengine.logging import MessageHub
    value = MessageHub.get_current_instance().get_info('iter')
    return None if value is None else int(value)


@MODELS.register_module()
class DKDLoss(nn.Module):
    """Decoupled knowledge distillation loss on logits (N, C).

    With ``t_n`` the target class of sample n, ``p = softmax(z / tau)``,
    ``b = [p_t, 1 - p_t]`` and ``p_hat`` the softmax of the logits without
    the target class (``p_i / (1 - p_t)``, i != t)::

        TCKD = tau^2 / N * sum_n KL(b^T_n || b^S_n)
        NCKD = tau^2 / N * sum_n KL(p_hat^T_n || p_hat^S_n)
        loss = loss_weight * warmup * (alpha * TCKD + beta * NCKD)

    as the official code computes it (its ``-1000`` logit mask of the target
    class is an exact exclusion here, and ``log(1 - p_t)`` is taken from the
    log-sum-exp of the non-target logits, so both terms stay finite for a
    confident teacher). Since KD = TCKD + (1 - p^T_t) * NCKD, KD weighs NCKD
    by the teacher's non-target mass; DKD gives it its own weight ``beta``.

    Targets: ``data_samples[i].gt_label``; with mmpretrain's Mixup / CutMix
    batch augments (soft ``gt_score`` labels) the argmax of the score, i.e.
    the class with the larger share of the mixed image (a tie goes to the
    lower class index), see :func:`dkd_targets`. The distiller passes the
    batch's data samples because ``forward`` takes ``data_samples``.

    Warm-up: the official code multiplies the loss by ``min(epoch / W, 1)``
    with epochs counted from 1. ``warmup_iters=W`` applies the same ramp per
    iteration, ``min((i + 1) / W, 1)`` at the 0-based training iteration
    ``i``, which the loss reads from mmengine's ``MessageHub`` (the Runner
    records it before every iteration, also after a resume). The official
    ImageNet setting (``WARMUP: 1`` epoch) gives a factor of 1 from the
    first epoch on, i.e. ``warmup_iters=0``; its CIFAR-100 setting (20
    epochs) is ``warmup_iters = 20 * iterations per epoch``. Outside a
    Runner (no iteration recorded) the factor is 1, with a warning.

    Example (ResNet-34 -> ResNet-18 on ImageNet, the paper's setting)::

        distill=dict(logits=dict(
            student='head.fc', teacher='head.fc',
            loss=dict(type='DKDLoss', tau=1.0, alpha=1.0, beta=0.5)))

    Args:
        tau (float): softmax temperature. Defaults to 1.0.
        alpha (float): weight of TCKD. Defaults to 1.0.
        beta (float): weight of NCKD. Defaults to 8.0 (the official
            CIFAR-100 default; ImageNet uses 0.5 for ResNet-34 -> ResNet-18
            and 2.0 for ResNet-50 -> MobileNet-V1).
        loss_weight (float): weight of the loss. Defaults to 1.0.
        warmup_iters (int): iterations of the linear warm-up; 0 for none.
            Defaults to 0.
    """

    def __init__(self,
                 tau: float = 1.0,
                 alpha: float = 1.0,
                 beta: float = 8.0,
                 loss_weight: float = 1.0,
                 warmup_iters: int = 0) -> None:
        super().__init__()
        if tau <= 0:
            raise ValueError(f'DKDLoss needs tau > 0, got {tau}.')
        if alpha < 0 or beta < 0:
            raise ValueError(
                f'DKDLoss needs alpha >= 0 and beta >= 0, got alpha={alpha}, '
                f'beta={beta}.')
        if int(warmup_iters) != warmup_iters or warmup_iters < 0:
            raise ValueError(
                'DKDLoss needs warmup_iters to be a whole number >= 0, got '
                f'{warmup_iters}.')
        self.tau = tau
        self.alpha = alpha
        self.beta = beta
        self.loss_weight = loss_weight
        self.warmup_iters = int(warmup_iters)
        self._warned_no_iter = False

    def warmup_factor(self) -> float:
        """``min((i + 1) / warmup_iters, 1)`` at the current iteration i."""
        if self.warmup_iters == 0:
            return 1.0
        iteration = current_iter()
        if iteration is None:
            if not self._warned_no_iter:
                self._warned_no_iter = True
                warnings.warn(
                    f'DKDLoss(warmup_iters={self.warmup_iters}) found no '
                    "training iteration in mmengine's MessageHub (it runs "
                    'outside an mmengine Runner): the warm-up factor is 1.')
            return 1.0
        return min((iteration + 1) / self.warmup_iters, 1.0)

    def decoupled(self, student: torch.Tensor, teacher: torch.Tensor,
                  targets: torch.Tensor) -> tuple:
        """The per-sample (TCKD, NCKD) divergences (N,), not yet multiplied
        by tau^2, alpha, beta or any weight."""
        n, c = student.shape
        # the non-target classes of each row, in order, gathered (a boolean
        # mask would synchronise with the device)
        rest = torch.arange(c - 1, device=student.device).expand(n, c - 1)
        rest = rest + (rest >= targets[:, None]).long()
        terms = []
        for logits in (teacher, student):
            z = logits / self.tau
            log_all = torch.logsumexp(z, dim=1)
            others = z.gather(1, rest)
            log_others = torch.logsumexp(others, dim=1)
            # log b = [log p_t, log(1 - p_t)]
            z_target = z.gather(1, targets[:, None])[:, 0]
            log_b = torch.stack([z_target - log_all, log_others - log_all],
                                dim=1)
            log_p_hat = others - log_others.unsqueeze(1)
            terms.append((log_b, log_p_hat))
        (log_b_t, log_hat_t), (log_b_s, log_hat_s) = terms
        return (kl_from_log_probs(log_b_t, log_b_s, dim=1),
                kl_from_log_probs(log_hat_t, log_hat_s, dim=1))

    def forward(self,
                student: torch.Tensor,
                teacher: torch.Tensor,
                data_samples: Optional[list] = None) -> torch.Tensor:
        """Compute the weighted DKD loss.

        Args:
            student (torch.Tensor): student logits (N, C).
            teacher (torch.Tensor): teacher logits (N, C); detached.
            data_samples (list): the batch's data samples (mmpretrain
                ``DataSample``) with ``gt_label`` or ``gt_score``.

        Returns:
            torch.Tensor: scalar loss, float32 for half-precision inputs.
        """
        check_logits('DKDLoss', student, teacher)
        n, c = student.shape
        targets = dkd_targets(data_samples, n, c, student.device)
        tckd, nckd = self.decoupled(
            upcast(student), upcast(teacher.detach()), targets)
        loss = (self.alpha * tckd.sum() +
                self.beta * nckd.sum()) * self.tau**2 / n
        return self.loss_weight * self.warmup_factor() * loss
