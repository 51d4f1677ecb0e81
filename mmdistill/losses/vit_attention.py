"""ViT attention distillation (AttnDistill).

Paper: "Attention Distillation: self-supervised vision transformer students
need more guidance", Kai Wang, Fei Yang, Joost van de Weijer, BMVC 2022
(arXiv:2210.00944). Implemented: the attention guidance loss ``L_a`` on the
class token's attention of the last block, in its three cases: (a) equal
heads and patches, (b) equal heads and other patch counts (interpolate and
renormalise), (c) other head counts (merge the heads at temperature T).

The loss reads the output of the last block's ``qkv`` projection of both
ViTs (``backbone.layers.11.attn.qkv`` for a 12-layer mmpretrain
``VisionTransformer``) and recomputes, per head, the attention of the class
token's query over all keys exactly as mmpretrain's ``MultiheadAttention``
does. The class-token half of the method (projector + MSE) is
``TokenProjector`` with ``MSELoss``.
"""
import math
from typing import List, Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from mmdistill.registry import MODELS
from mmdistill.utils.tensor import upcast
from .functional import kl_from_log_probs

_MODES = ('nearest', 'nearest-exact', 'bilinear', 'bicubic', 'area')


def class_attention_logits(qkv: torch.Tensor,
                           num_heads: int,
                           owner: str = 'qkv') -> torch.Tensor:
    """Pre-softmax attention of the class token's query over all keys.

    Uses the layout and scale of mmpretrain's ``MultiheadAttention``
    (``mmpretrain/models/utils/attention.py``): the ``qkv`` output
    ``(N, L, 3*C)`` is split as ``(N, L, 3, H, C/H)`` into queries, keys and
    values, head ``h`` owns channels ``h*C/H ... (h+1)*C/H - 1`` of each, and
    ``logit_hj = q_h(cls) . k_h(j) * (C/H)^-0.5`` (``F.scaled_dot_product_
    attention``'s default scale). mmpretrain's ViT/DeiT layers never set
    ``qk_scale``; a ``MultiheadAttention`` built with it (mmpretrain 1.2.0
    then multiplies by ``(C/H)^0.5`` whatever the value) is not matched.
    The class token is token 0, as in every mmpretrain ViT (DeiT's
    distillation token, when present, is token 1).

    Args:
        qkv (torch.Tensor): Output of a ``qkv`` linear layer, ``(N, L, 3*C)``.
        num_heads (int): Heads of that attention layer.
        owner (str): Name used in error messages.

    Returns:
        torch.Tensor: ``(N, H, L)`` logits; their softmax over the last
        dimension is the class token's attention.
    """
    if qkv.dim() != 3:
        raise ValueError(
            f'{owner} must be the (N, L, 3*C) output of an attention '
            f'layer\'s qkv projection, got shape {tuple(qkv.shape)}: tap '
            '"backbone.layers.<last>.attn.qkv".')
    n, length, width = qkv.shape
    if width % (3 * num_heads):
        raise ValueError(
            f'{owner} has {width} channels, not a multiple of 3 x '
            f'{num_heads} heads: give the head count of the tapped layer, '
            'and tap its qkv projection (3*C channels).')
    head_dim = width // (3 * num_heads)
    parts = qkv.reshape(n, length, 3, num_heads, head_dim)
    query = parts[:, 0, 0]  # (N, H, D): the class token's query per head
    keys = parts[:, :, 1]  # (N, L, H, D)
    return torch.einsum('nhd,nlhd->nhl', query, keys) * head_dim**-0.5


def class_attention(qkv: torch.Tensor, num_heads: int) -> torch.Tensor:
    """The class token's attention over all keys, ``(N, H, L)``, summing to
    1 over L (see :func:`class_attention_logits`)."""
    return class_attention_logits(qkv, num_heads).softmax(dim=-1)


def _square_side(count: int, owner: str, extra: int) -> int:
    side = math.isqrt(count)
    if side * side != count:
        raise ValueError(
            f'The {owner} has {count} patch tokens after {extra} extra '
            'token(s), not a square grid, so its attention cannot be '
            'resized: check num_extra_tokens (1 for ViT/DeiT, 2 for '
            'distilled DeiT) and use square input images.')
    return side


def resize_patch_attention(attention: torch.Tensor,
                           num_patches: int,
                           num_extra_tokens: int = 1,
                           mode: str = 'bicubic') -> torch.Tensor:
    """Resize the patch part of class-token attention to another grid.

    AttnDistill, case (b): ``(a_j^h)' = NR_{1 - a_0^h}(IP(a_j^h))``. The
    entries of the extra tokens (the class token's attention to itself,
    ``a_0``) are kept; the patch entries are reshaped to their square grid,
    interpolated (IP) to the grid of ``num_patches`` tokens, clamped at the
    smallest positive float (bicubic interpolation can undershoot below 0)
    and renormalised (NR) to sum to ``1 - sum(extra entries)``.

    Args:
        attention (torch.Tensor): ``(N, H, E + P)`` probabilities.
        num_patches (int): Patch tokens wanted (a square).
        num_extra_tokens (int): ``E``, the leading non-patch tokens.
        mode (str): ``F.interpolate`` mode. Defaults to ``'bicubic'`` (the
            authors' code).

    Returns:
        torch.Tensor: ``(N, H, E + num_patches)``, summing to 1 over keys.
    """
    n, heads, length = attention.shape
    side_in = _square_side(length - num_extra_tokens, 'teacher',
                           num_extra_tokens)
    side_out = _square_side(num_patches, 'student', num_extra_tokens)
    extra = attention[..., :num_extra_tokens]
    grid = attention[..., num_extra_tokens:].reshape(n, heads, side_in,
                                                     side_in)
    align = {} if mode in ('nearest', 'nearest-exact', 'area') else dict(
        align_corners=False)
    grid = F.interpolate(grid, size=(side_out, side_out), mode=mode, **align)
    patches = grid.reshape(n, heads, -1).clamp_min(
        torch.finfo(grid.dtype).tiny)
    mass = (1 - extra.sum(-1, keepdim=True)).clamp_min(0)
    patches = patches * (mass / patches.sum(-1, keepdim=True))
    return torch.cat([extra, patches], dim=-1)


def merge_heads(log_attention: torch.Tensor, tau: float) -> torch.Tensor:
    """AttnDistill, case (c): ``a_j = (1/tau) * sum_h log a_j^h``, then a
    softmax over j. Takes and returns log-probabilities, ``(N, H, L) ->
    (N, L)``."""
    return F.log_softmax(log_attention.sum(dim=1) / tau, dim=-1)


@MODELS.register_module()
class ViTAttentionLoss(nn.Module):
    """KL divergence between teacher and student class-token attention.

    Both inputs are the outputs of the last block's ``qkv`` projection
    ``(N, L, 3*C)``; the loss recomputes ``A^h``, the softmax over all L keys
    of the class token's query against the keys of head ``h`` (see
    :func:`class_attention_logits`), and takes (AttnDistill, the attention
    guidance loss):

    * (a) equal heads and tokens:
      ``L_a = sum_h KL(A_t^h || A_s^h)``;
    * (b) equal heads, other patch counts: the teacher's patch attention is
      resized to the student's grid and renormalised to ``1 - a_0``
      (:func:`resize_patch_attention`), then (a);
    * (c) other head counts (or ``merge_heads=True``): the heads of each
      model are merged, ``A = softmax_j((1/tau) sum_h log a_j^h)``
      (:func:`merge_heads`), and ``L_a = KL(A_t || A_s)``; with other patch
      counts too, the teacher's heads are resized first.

    ``KL(p || q) = sum_j p_j (log p_j - log q_j)``; the value is summed over
    heads and keys and divided by the batch size N (``reduction=
    'batchmean'`` of the authors' code), times ``loss_weight``. Zero when
    the student's attention equals the teacher's; the teacher gets no
    gradient.

    The head counts cannot be read from the tensors: they must be those of
    the tapped layers (mmpretrain: 3 for DeiT-tiny, 6 for DeiT-small /
    ViT-S, 12 for ViT-B); the distiller checks them against the tapped
    layers' ``num_heads`` when it is built (:meth:`tap_problems`). Unlike
    the authors' code, the attention is not clamped to [1e-5, 0.996] and
    renormalised before the divergence: the loss is the paper's ``L_a`` on
    the exact attention (the clamp changes little at ``tau`` 10, much on
    very peaked attention at ``tau`` 1). Settings of the authors' scripts:
    weight 0.1, ``tau`` 10, bicubic resizing.

    Args:
        student_heads (int): Heads of the student's tapped attention layer.
        teacher_heads (int): Heads of the teacher's tapped attention layer.
        tau (float): Temperature T of the head merge (case c). Defaults to
            10.0 (``ATTN_T`` of the authors' scripts).
        merge_heads (bool, optional): Merge the heads (case c) even when the
            counts are equal; ``False`` refuses different counts. Defaults to
            None: merge exactly when the counts differ.
        num_extra_tokens (int | tuple[int, int]): Tokens before the patch
            tokens, the class token first (1 for ViT/DeiT, 2 for distilled
            DeiT); a pair gives (student, teacher) counts. When the teacher
            has more (a distilled-DeiT teacher, a plain ViT student), the
            teacher's attention to its extra tokens after the student's
            count (the distillation token) is dropped and the rest
            renormalised to sum 1. Only used when the token counts differ.
            Defaults to 1.
        interpolation (str): ``F.interpolate`` mode of the resizing (case
            b). Defaults to ``'bicubic'``.
        loss_weight (float): Weight of the loss. Defaults to 1.0.
    """

    #: compares attention computed from qkv projections, not maps: the
    #: distiller's advice about map sizes and channels does not apply
    compares_maps = False

    def __init__(self,
                 student_heads: int,
                 teacher_heads: int,
                 tau: float = 10.0,
                 merge_heads: Optional[bool] = None,
                 num_extra_tokens: int = 1,
                 interpolation: str = 'bicubic',
                 loss_weight: float = 1.0) -> None:
        super().__init__()
        for name, value in (('student_heads', student_heads),
                            ('teacher_heads', teacher_heads)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(
                    f'ViTAttentionLoss needs {name} >= 1 (the num_heads of '
                    f'the tapped attention layer), got {value!r}.')
        if tau <= 0:
            raise ValueError(f'ViTAttentionLoss needs tau > 0, got {tau}.')
        if merge_heads is False and student_heads != teacher_heads:
            raise ValueError(
                f'ViTAttentionLoss compares heads one to one only when both '
                f'models have as many (student {student_heads}, teacher '
                f'{teacher_heads}): leave merge_heads=None to merge them '
                '(AttnDistill, case c).')
        extras = (num_extra_tokens, num_extra_tokens) if isinstance(
            num_extra_tokens, int) else tuple(num_extra_tokens)
        if len(extras) != 2 or any(
                not isinstance(e, int) or e < 1 for e in extras):
            raise ValueError(
                'ViTAttentionLoss needs num_extra_tokens >= 1 (the class '
                'token comes first), or a (student, teacher) pair of them, '
                f'got {num_extra_tokens!r}.')
        if extras[0] > extras[1]:
            raise ValueError(
                f'ViTAttentionLoss: the student has {extras[0]} extra tokens '
                f'and the teacher {extras[1]}; the teacher has no attention '
                "to compare with the student's additional ones. Use a "
                'student with at most as many extra tokens as the teacher.')
        if interpolation not in _MODES:
            raise ValueError(
                f'ViTAttentionLoss: interpolation must be one of {_MODES}, '
                f'got {interpolation!r}.')
        self.student_heads = student_heads
        self.teacher_heads = teacher_heads
        self.tau = tau
        self.merge_heads = (student_heads != teacher_heads
                            if merge_heads is None else bool(merge_heads))
        self.num_extra_tokens = extras  # (student, teacher)
        self.interpolation = interpolation
        self.loss_weight = loss_weight

    def tap_problems(self, student: nn.Module, student_tap: str,
                     teacher: nn.Module, teacher_tap: str) -> List[str]:
        """What contradicts the tapped layers, before anything runs: where
        the module holding a tapped ``qkv`` projection says its head count
        (mmpretrain's ``MultiheadAttention.num_heads``), ``student_heads``
        and ``teacher_heads`` must be it. A wrong count that still divides
        the width would otherwise give another loss without a word.

        Args:
            student (nn.Module): The student model.
            student_tap (str): The student tap's module path.
            teacher (nn.Module): The teacher model.
            teacher_tap (str): The teacher tap's module path.

        Returns:
            list[str]: One ``'<argument>=... : fix'`` line per problem.
        """
        problems = []
        for arg, heads, model, tap in (
                ('student_heads', self.student_heads, student, student_tap),
                ('teacher_heads', self.teacher_heads, teacher, teacher_tap)):
            owner = tap.rpartition('.')[0]
            try:
                layer = model.get_submodule(owner)
            except AttributeError:
                continue
            actual = getattr(layer, 'num_heads', None)
            if isinstance(actual, int) and actual != heads:
                problems.append(
                    f'{arg}={heads}, but the tapped layer {owner!r} has '
                    f'num_heads={actual}: set {arg}={actual}.')
        return problems

    def log_attention(
            self, student: torch.Tensor,
            teacher: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """The compared distributions as log-probabilities.

        Args:
            student (torch.Tensor): Student ``qkv`` output ``(N, L_s, 3*C_s)``.
            teacher (torch.Tensor): Teacher ``qkv`` output ``(N, L_t, 3*C_t)``.

        Returns:
            tuple: student and teacher log-attention, ``(N, H, L_s)`` each,
            or ``(N, L_s)`` each when the heads are merged.
        """
        if (student.dim() == teacher.dim() == 3
                and student.shape[0] != teacher.shape[0]):
            raise ValueError(
                f'ViTAttentionLoss got a student batch of {student.shape[0]} '
                f'and a teacher batch of {teacher.shape[0]}.')
        log_s = F.log_softmax(
            class_attention_logits(
                upcast(student), self.student_heads, 'the student tensor'),
            dim=-1)
        log_t = F.log_softmax(
            class_attention_logits(
                upcast(teacher.detach()), self.teacher_heads,
                'the teacher tensor'),
            dim=-1)
        extra, extra_t = self.num_extra_tokens
        if extra_t > extra and log_t.shape[-1] != log_s.shape[-1]:
            # drop the teacher's additional extra tokens, renormalise
            log_t = torch.cat([log_t[..., :extra], log_t[..., extra_t:]],
                              dim=-1)
            log_t = log_t - torch.logsumexp(log_t, dim=-1, keepdim=True)
        length_s, length_t = log_s.shape[-1], log_t.shape[-1]
        if length_s != length_t:
            if min(length_s, length_t) <= extra:
                raise ValueError(
                    f'ViTAttentionLoss: {length_s} student and {length_t} '
                    f'teacher tokens leave no patch token after '
                    f'num_extra_tokens={extra}.')
            resized = resize_patch_attention(log_t.exp(), length_s - extra,
                                             extra, self.interpolation)
            log_t = resized.clamp_min(torch.finfo(resized.dtype).tiny).log()
        if self.merge_heads:
            log_s = merge_heads(log_s, self.tau)
            log_t = merge_heads(log_t, self.tau)
        return log_s, log_t

    def forward(self,
                student: torch.Tensor,
                teacher: torch.Tensor,
                data_samples: Optional[list] = None) -> torch.Tensor:
        """Compute the weighted attention divergence.

        Args:
            student (torch.Tensor): Output of the student's last ``qkv``
                projection, ``(N, L_s, 3*C_s)``.
            teacher (torch.Tensor): Output of the teacher's last ``qkv``
                projection, ``(N, L_t, 3*C_t)``; detached, no gradient
                reaches the teacher.
            data_samples (list, optional): Unused, accepted for the common
                loss signature.

        Returns:
            torch.Tensor: Scalar loss, float32 for half-precision inputs.
        """
        log_s, log_t = self.log_attention(student, teacher)
        kl = kl_from_log_probs(log_t, log_s, dim=-1).sum()
        return self.loss_weight * kl / student.shape[0]


__all__ = [
    'ViTAttentionLoss', 'class_attention', 'class_attention_logits',
    'merge_heads', 'resize_patch_attention'
]
