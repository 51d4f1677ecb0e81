"""Linear connector: the "Linear" row of the MLP-connector paper's Tables
1, 6 and 7.

Paper: "A Simple and Generic Framework for Feature Distillation via
Channel-wise Transformation", Ziwei Liu, Yongtao Wang, Xiaojie Chu et al.,
ICCV Workshops 2023 (arXiv:2303.13212). Implemented: the
"Linear" transformation (one 1x1 convolution, no activation) of the
ablations of Sections 4.4.1 and 4.4.2.
"""
from typing import Optional

import torch
import torch.nn as nn
from mmengine.model import BaseModule

from mmdistill.registry import MODELS


@MODELS.register_module()
class LinearConnector(BaseModule):
    """One 1x1 convolution on the student: ``S' = W * S + b``.

    A linear channel-wise transformation with no activation ("Linear" in
    the MLP-connector paper, arXiv:2303.13212, Tables 1, 6 and 7); the
    teacher is left untouched.

    Args:
        in_channels (int): Channels of the student feature.
        out_channels (int): Channels of the teacher feature.
        bias (bool): Whether the convolution has a bias. Defaults to True.
        init_cfg (dict, optional): mmengine init config.
    """

    def __init__(self,
                 in_channels: int,
                 out_channels: int,
                 bias: bool = True,
                 init_cfg: Optional[dict] = None) -> None:
        super().__init__(init_cfg=init_cfg)
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.conv = nn.Conv2d(in_channels, out_channels, 1, bias=bias)

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
        return self.conv(student)


__all__ = ['LinearConnector']
