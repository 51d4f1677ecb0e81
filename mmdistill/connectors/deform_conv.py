"""Deformable-convolution connector: the "Deformable 3x3" row of the
MLP-connector paper's Table 7.

Paper: "A Simple and Generic Framework for Feature Distillation via
Channel-wise Transformation", Ziwei Liu, Yongtao Wang, Xiaojie Chu et al.,
ICCV Workshops 2023 (arXiv:2303.13212), Section 4.4.2 and Table 7
(Deformable Conv3x3 -> ReLU -> Deformable Conv3x3).
"""
from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmcv.ops import (DeformConv2dPack, ModulatedDeformConv2dPack,
                      deform_conv2d, modulated_deform_conv2d)
from mmengine.model import BaseModule

from mmdistill.registry import MODELS


def _im2col_step(batch: int, limit: int) -> int:
    """Largest divisor of ``batch`` not above ``limit``.

    mmcv's deformable convolution processes ``im2col_step`` images per call
    and asserts that it divides the batch; choosing a divisor lets any batch
    size through.
    """
    for step in range(min(batch, limit), 0, -1):
        if batch % step == 0:
            return step
    return 1


@MODELS.register_module()
class DeformConvConnector(BaseModule):
    """Deformable conv3x3 -> ReLU -> deformable conv3x3 on the student.

    ``S' = DCN_2(ReLU(DCN_1(S)))`` where each ``DCN`` is mmcv's deformable
    3x3 convolution (padding 1, stride 1): per output position ``p`` and
    kernel tap ``k`` the input is sampled bilinearly (zero outside the map)
    at ``p + p_k + dp_k(p)``, with the offsets ``dp`` predicted from the
    layer's input by a 3x3 convolution initialised to zero (so the connector
    starts as a plain conv3x3 stack), and ``out(p) = sum_k w_k x(p + p_k +
    dp_k)``. ``modulated=True`` uses DCNv2 instead
    (``ModulatedDeformConv2dPack``: a sigmoid mask ``m_k(p)`` multiplies each
    sample, plus a bias). "Deformable 3x3" of the
    MLP-connector paper (arXiv:2303.13212, Section 4.4.2, Table 7).
    mmcv's DCNv1 has no bias. Runs on CPU and GPU (mmcv >= 2.0 compiled with
    its ops).

    Args:
        in_channels (int): Channels of the student feature.
        out_channels (int): Channels of the teacher feature.
        hidden_channels (int, optional): Output channels of the first
            deformable conv. Defaults to ``out_channels``.
        deform_groups (int): Offset groups of each deformable conv. Defaults
            to 1.
        modulated (bool): Use modulated deformable conv (DCNv2). Defaults to
            False (DCNv1).
        init_cfg (dict, optional): mmengine init config.
    """

    def __init__(self,
                 in_channels: int,
                 out_channels: int,
                 hidden_channels: Optional[int] = None,
                 deform_groups: int = 1,
                 modulated: bool = False,
                 init_cfg: Optional[dict] = None) -> None:
        super().__init__(init_cfg=init_cfg)
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.modulated = modulated
        hidden_channels = hidden_channels or out_channels
        layer = ModulatedDeformConv2dPack if modulated else DeformConv2dPack
        self.dcn1 = layer(
            in_channels,
            hidden_channels,
            3,
            padding=1,
            deform_groups=deform_groups)
        self.relu = nn.ReLU(inplace=True)
        self.dcn2 = layer(
            hidden_channels,
            out_channels,
            3,
            padding=1,
            deform_groups=deform_groups)

    @staticmethod
    def _deform(layer: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """Run one deformable conv layer for any batch and map size.

        mmcv's kernels refuse maps smaller than the kernel (FPN P6/P7 are
        2x2 and 1x1) and batches that ``im2col_step`` does not divide. The
        map is zero-padded at the bottom and right to the kernel size (the
        same zeros the bilinear sampling reads outside the map, so the
        result is unchanged) and cropped back afterwards, and the im2col
        step is a divisor of the batch.
        """
        h, w = x.shape[-2:]
        pad_h = max(layer.kernel_size[0] - h, 0)
        pad_w = max(layer.kernel_size[1] - w, 0)
        raw = layer.conv_offset(x)
        if pad_h or pad_w:
            x = F.pad(x, (0, pad_w, 0, pad_h))
            raw = F.pad(raw, (0, pad_w, 0, pad_h))
        if isinstance(layer, ModulatedDeformConv2dPack):
            o1, o2, mask = torch.chunk(raw, 3, dim=1)
            out = modulated_deform_conv2d(
                x, torch.cat((o1, o2), dim=1), torch.sigmoid(mask),
                layer.weight, layer.bias, layer.stride, layer.padding,
                layer.dilation, layer.groups, layer.deform_groups)
        else:
            out = deform_conv2d(x, raw, layer.weight, layer.stride,
                                layer.padding, layer.dilation, layer.groups,
                                layer.deform_groups, False,
                                _im2col_step(x.shape[0], layer.im2col_step))
        return out[..., :h, :w]

    def forward(self,
                student: torch.Tensor,
                teacher: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Map the student feature to the teacher's channels.

        Args:
            student (torch.Tensor): Student feature ``(N, C_s, H, W)``.
            teacher (torch.Tensor, optional): Unused.

        Returns:
            torch.Tensor: ``(N, C_t, H, W)``.
        """
        x = self.relu(self._deform(self.dcn1, student))
        return self._deform(self.dcn2, x)


__all__ = ['DeformConvConnector']
