"""Convolutional connectors: the MLP-connector paper's "Conv3x3" ablation
and the angular-distillation paper's 1x1 conv + BN + ReLU channel alignment.

Papers: "A Simple and Generic Framework for Feature Distillation via
Channel-wise Transformation", Ziwei Liu, Yongtao Wang, Xiaojie Chu et al.,
ICCV Workshops 2023 (arXiv:2303.13212), Section 4.4.2 and Table 7 (the
local spatial transformation, Conv3x3 -> ReLU -> Conv3x3); and
"Rethinking Knowledge Distillation with Raw Features for Semantic
Segmentation", Tao Liu, Chenshu Chen, Xi Yang, Wenming Tan, WACV 2024
(https://openreview.net/forum?id=HwbEioBGLo3), Section 4.2, network
architectures.
"""
from typing import Optional

import torch
import torch.nn as nn
from mmcv.cnn import ConvModule
from mmengine.model import BaseModule

from mmdistill.registry import MODELS


@MODELS.register_module()
class ConvConnector(BaseModule):
    """A stack of ``num_convs`` convolutions (``mmcv.cnn.ConvModule``).

    ``S' = f_L(... f_2(f_1(S)))`` where every ``f_i`` but the last is
    ``act(norm(conv_kxk(x)))`` and the last is a plain ``conv_kxk`` (or also
    ``act(norm(.))`` when ``last_norm_act=True``); padding ``k // 2`` keeps
    the spatial size. The defaults give the MLP-connector paper's "Conv3x3"
    ablation (``conv3x3 -> ReLU -> conv3x3``, arXiv:2303.13212 Table 7);
    ``kernel_size=1, num_convs=1, norm_cfg=dict(type='BN'),
    last_norm_act=True`` gives the ``conv1x1 -> BN -> ReLU`` alignment the
    angular-distillation paper (Liu et al., WACV 2024, Section 4.2) applies
    to the student when its channels differ from the teacher's.

    Args:
        in_channels (int): Channels of the student feature.
        out_channels (int): Channels of the teacher feature.
        hidden_channels (int, optional): Output channels of the inner
            convolutions. Defaults to ``out_channels``.
        kernel_size (int): Odd kernel size of every convolution. Defaults
            to 3.
        num_convs (int): Number of convolutions, >= 1. Defaults to 2.
        norm_cfg (dict, optional): Norm layer after the inner convolutions
            (and the last one with ``last_norm_act``). Defaults to None.
        act_cfg (dict, optional): Activation after the inner convolutions
            (and the last one with ``last_norm_act``). Defaults to
            ``dict(type='ReLU')``.
        last_norm_act (bool): Whether the last convolution is also followed
            by ``norm_cfg`` and ``act_cfg``. Defaults to False.
        init_cfg (dict, optional): mmengine init config.
    """

    def __init__(self,
                 in_channels: int,
                 out_channels: int,
                 hidden_channels: Optional[int] = None,
                 kernel_size: int = 3,
                 num_convs: int = 2,
                 norm_cfg: Optional[dict] = None,
                 act_cfg: Optional[dict] = dict(type='ReLU'),
                 last_norm_act: bool = False,
                 init_cfg: Optional[dict] = None) -> None:
        super().__init__(init_cfg=init_cfg)
        if num_convs < 1:
            raise ValueError(f'num_convs must be >= 1, got {num_convs}')
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(
                f'kernel_size must be odd to keep the spatial size, got '
                f'{kernel_size}')
        self.in_channels = in_channels
        self.out_channels = out_channels
        hidden_channels = hidden_channels or out_channels
        layers = []
        channels = in_channels
        for i in range(num_convs):
            last = i == num_convs - 1
            with_norm_act = not last or last_norm_act
            layers.append(
                ConvModule(
                    channels,
                    out_channels if last else hidden_channels,
                    kernel_size,
                    padding=kernel_size // 2,
                    norm_cfg=norm_cfg if with_norm_act else None,
                    act_cfg=act_cfg if with_norm_act else None))
            channels = hidden_channels
        self.convs = nn.Sequential(*layers)

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
        return self.convs(student)


__all__ = ['ConvConnector']
