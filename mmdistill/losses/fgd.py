"""FGD: focal and global distillation for detectors.

Paper: "Focal and Global Knowledge Distillation for Detectors", Zhendong
Yang, Zhe Li, Xiaohu Jiang, Yuan Gong, Zehuan Yuan, Danpei Zhao and Chun
Yuan, CVPR 2022 (arXiv:2111.11837). Section 3.1, focal distillation: the
feature loss ``L_fea`` (the ``alpha`` foreground and ``beta`` background
terms, weighted by the binary, scale and attention masks) and the attention
loss ``L_at`` (``gamma``); Section 3.2, global distillation: ``L_global``
(``lambda``) on the GcBlock relation ``R(F)``. The masks are defined in
:mod:`mmdistill.masks` (box masks: Eq. 2-4 of the paper).
"""
import warnings
from typing import Dict, Optional, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmengine.model import BaseModule, constant_init, kaiming_init

from mmdistill.losses.functional import squared_error_map
from mmdistill.masks import (BoxMaskCache, channel_attention,
                             spatial_attention)
from mmdistill.registry import MODELS
from mmdistill.utils.tensor import upcast

# One cache for every FGDLoss: the losses of the FPN levels of a batch share
# one rasterisation of the batch's boxes.
_BOX_MASKS = BoxMaskCache()


class GcBlock(BaseModule):
    """Global context block used by FGD's global (relation) loss.

    ``GC(F) = F + transform(context(F))`` where

    * ``context(F) = sum_{hw} softmax_{hw}(conv1x1_{C->1}(F)) * F``, shape
      ``(N, C, 1, 1)``;
    * ``transform = conv1x1_{C->C/2} -> LayerNorm([C/2, 1, 1]) -> ReLU ->
      conv1x1_{C/2->C}``.

    Initialised as the official FGD code: the context conv with Kaiming
    normal (``fan_in``, zero bias), the transform's last conv with zeros, so
    ``GC(F) = F`` at the start.

    Args:
        channels (int): Number of channels C (at least 2).
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        if channels < 2:
            raise ValueError(f'GcBlock needs at least 2 channels, got '
                             f'{channels}')
        hidden = channels // 2
        self.context_conv = nn.Conv2d(channels, 1, kernel_size=1)
        self.transform = nn.Sequential(
            nn.Conv2d(channels, hidden, kernel_size=1),
            nn.LayerNorm([hidden, 1, 1]), nn.ReLU(inplace=True),
            nn.Conv2d(hidden, channels, kernel_size=1))
        self.init_weights()

    def init_weights(self) -> None:
        kaiming_init(self.context_conv, mode='fan_in')
        constant_init(self.transform[-1], val=0)

    def context(self, x: torch.Tensor) -> torch.Tensor:
        """Attention-pooled context of ``x``, shape ``(N, C, 1, 1)``."""
        n, c, h, w = x.shape
        weights = F.softmax(self.context_conv(x).reshape(n, 1, h * w), dim=2)
        ctx = torch.bmm(x.reshape(n, c, h * w), weights.transpose(1, 2))
        return ctx.reshape(n, c, 1, 1)

    def delta(self, x: torch.Tensor) -> torch.Tensor:
        """``transform(context(x))``, what the block adds to ``x``, shape
        ``(N, C, 1, 1)``."""
        return self.transform(self.context(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.delta(x)


@MODELS.register_module()
class FGDLoss(BaseModule):
    """Focal and global distillation loss (Yang et al., CVPR 2022).

    With S the (aligned) student and T the detached teacher feature, both
    ``(N, C, H, W)``, the teacher's attention ``A_S^T = spatial_attention(T,
    t)`` (N, H, W) and ``A_C^T = channel_attention(T, t)`` (N, C), and the
    box masks ``M_fg, M_bg = box_masks(...)`` (see :mod:`mmdistill.masks`):

    * ``fg = sum(M_fg * A_S^T * A_C^T * (S - T)^2) / N``,
    * ``bg = sum(M_bg * A_S^T * A_C^T * (S - T)^2) / N``,
    * ``attention = (sum|A_C^S - A_C^T| + sum|A_S^S - A_S^T|) / N``,
    * ``global = sum((GC_s(S) - GC_t(T))^2) / N`` with two separate learnable
      :class:`GcBlock` s,

    ``loss = loss_weight * (alpha * fg + beta * bg + gamma * attention +
    lambda_ * global)``. Settings of the paper: RetinaNet alpha 1e-3, beta
    5e-4, gamma 5e-4, lambda_ 5e-6 (the defaults); Faster R-CNN 5e-5, 2.5e-5,
    5e-5, 5e-7. One loss per FPN level.

    The ground-truth boxes come from ``data_samples[i].gt_instances.bboxes``
    (padded-input pixels) and are scaled to the feature map through
    ``data_samples[i].metainfo['batch_input_shape']``. The FGD losses of the
    FPN levels of one batch share one rasterisation of the boxes
    (:class:`mmdistill.masks.BoxMaskCache`), and nothing in the forward reads
    a value back to the host. The teacher is
    detached: gradients reach the student, the align conv and both
    GcBlocks' parameters, never the teacher. The four unweighted components
    of the last call are kept, detached, in :attr:`last_components`.

    Args:
        in_channels (int): Channels of the teacher feature.
        student_channels (int, optional): Channels of the student feature;
            when given and different from ``in_channels`` a 1x1 conv aligns
            the student. Defaults to None (same as ``in_channels``).
        tau (float): Attention temperature t (the paper's T). Defaults to
            0.5.
        temperature (float, optional): The former name of ``tau``, still
            accepted with a warning.
        alpha (float): Weight of the foreground loss. Defaults to 1e-3.
        beta (float): Weight of the background loss. Defaults to 5e-4.
        gamma (float): Weight of the attention loss. Defaults to 5e-4.
        lambda_ (float): Weight of the global loss. Defaults to 5e-6.
        loss_weight (float): Extra factor on the total. Defaults to 1.0.
        init_cfg (dict, optional): mmengine initialisation config.
    """

    def __init__(self,
                 in_channels: int,
                 student_channels: Optional[int] = None,
                 tau: float = 0.5,
                 alpha: float = 1e-3,
                 beta: float = 5e-4,
                 gamma: float = 5e-4,
                 lambda_: float = 5e-6,
                 loss_weight: float = 1.0,
                 init_cfg: Optional[dict] = None,
                 temperature: Optional[float] = None) -> None:
        super().__init__(init_cfg=init_cfg)
        if temperature is not None:
            warnings.warn('FGDLoss: temperature is now called tau (the name '
                          "every mmdistill loss uses): write tau=...",
                          DeprecationWarning)
            tau = temperature
        if tau <= 0:
            raise ValueError(f'tau must be positive, got {tau}')
        self.in_channels = in_channels
        self.student_channels = (
            in_channels if student_channels is None else student_channels)
        self.tau = tau
        self.alpha = alpha
        self.beta = beta
        self.gamma = gamma
        self.lambda_ = lambda_
        self.loss_weight = loss_weight
        if self.student_channels != in_channels:
            self.align = nn.Conv2d(
                self.student_channels, in_channels, kernel_size=1)
        else:
            self.align = None
        self.gc_student = GcBlock(in_channels)
        self.gc_teacher = GcBlock(in_channels)
        self.last_components: Dict[str, torch.Tensor] = {}

    @staticmethod
    def _boxes_and_shapes(data_samples: Optional[Sequence], n: int):
        if data_samples is None:
            raise ValueError(
                'FGDLoss needs the detection data samples (mmdet '
                'DetDataSample with gt_instances.bboxes and metainfo '
                '"batch_input_shape") to build its foreground/background '
                'masks, but data_samples is None; pass them to the loss.')
        if len(data_samples) != n:
            raise ValueError(
                f'FGDLoss got {len(data_samples)} data samples for a batch of '
                f'{n} features.')
        boxes, shapes = [], []
        for i, sample in enumerate(data_samples):
            gt = getattr(sample, 'gt_instances', None)
            if gt is None or not hasattr(gt, 'bboxes'):
                raise ValueError(
                    f'FGDLoss needs the detection data samples: data_samples['
                    f'{i}] has no gt_instances.bboxes (got '
                    f'{type(sample).__name__}).')
            meta = getattr(sample, 'metainfo', {})
            if 'batch_input_shape' not in meta:
                raise ValueError(
                    f'FGDLoss needs metainfo["batch_input_shape"] (set by '
                    f"mmdet's DetDataPreprocessor) in data_samples[{i}] to "
                    'scale the boxes to the feature map.')
            boxes.append(gt.bboxes)
            shapes.append(tuple(meta['batch_input_shape'])[:2])
        return boxes, shapes

    def forward(self,
                student: torch.Tensor,
                teacher: torch.Tensor,
                data_samples: Optional[Sequence] = None) -> torch.Tensor:
        """Weighted FGD loss of one feature level.

        Args:
            student (Tensor): Student feature ``(N, C_s, H, W)``.
            teacher (Tensor): Teacher feature ``(N, C, H, W)``.
            data_samples (list[DetDataSample]): The batch's data samples.

        Returns:
            Tensor: Scalar loss, already multiplied by its weights.
        """
        if student.dim() != 4 or teacher.dim() != 4:
            raise ValueError('FGDLoss expects (N, C, H, W) features, got '
                             f'{tuple(student.shape)} and '
                             f'{tuple(teacher.shape)}')
        if student.shape[0] != teacher.shape[0] or \
                student.shape[-2:] != teacher.shape[-2:]:
            raise ValueError(
                'FGDLoss needs student and teacher of the same batch size and '
                f'spatial size, got {tuple(student.shape)} and '
                f'{tuple(teacher.shape)}')
        if teacher.shape[1] != self.in_channels:
            raise ValueError(f'FGDLoss was built for {self.in_channels} '
                             f'teacher channels, got {teacher.shape[1]}')
        if student.shape[1] != self.student_channels:
            raise ValueError(
                f'FGDLoss was built for {self.student_channels} student '
                f'channels, got {student.shape[1]}; set student_channels.')
        n, _, h, w = teacher.shape
        boxes, shapes = self._boxes_and_shapes(data_samples, n)

        teacher = upcast(teacher.detach())
        if self.align is not None:
            student = self.align(student)
        student = upcast(student)
        if student.dtype != teacher.dtype:
            dtype = torch.promote_types(student.dtype, teacher.dtype)
            student, teacher = student.to(dtype), teacher.to(dtype)

        t = self.tau
        sa_t = spatial_attention(teacher, t)
        ca_t = channel_attention(teacher, t)
        sa_s = spatial_attention(student, t)
        ca_s = channel_attention(student, t)
        fg_mask, bg_mask = _BOX_MASKS.get(
            data_samples, boxes, shapes, (h, w), dtype=teacher.dtype,
            device=teacher.device)

        # (S - T)^2 weighted by the teacher's attention, summed over channels
        # (squared_error_map keeps no full-size difference for the backward)
        weighted = squared_error_map(
            student, teacher, weight=ca_t[:, :, None, None]) * sa_t
        fg_loss = (fg_mask * weighted).sum() / n
        bg_loss = (bg_mask * weighted).sum() / n
        attention_loss = ((ca_s - ca_t).abs().sum() +
                          (sa_s - sa_t).abs().sum()) / n
        # GC_s(S) - GC_t(T) = S - T + (delta_s(S) - delta_t(T))
        global_loss = squared_error_map(
            student, teacher, offset=self.gc_student.delta(student) -
            self.gc_teacher.delta(teacher)).sum() / n

        self.last_components = {
            'fg': fg_loss.detach(),
            'bg': bg_loss.detach(),
            'attention': attention_loss.detach(),
            'global': global_loss.detach(),
        }
        loss = (self.alpha * fg_loss + self.beta * bg_loss +
                self.gamma * attention_loss + self.lambda_ * global_loss)
        return self.loss_weight * loss
