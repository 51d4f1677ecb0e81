"""Channel-wise MLP connector of the MLP-connector paper.

Paper: "A Simple and Generic Framework for Feature Distillation via
Channel-wise Transformation", Ziwei Liu, Yongtao Wang, Xiaojie Chu et al.,
ICCV Workshops 2023 (arXiv:2303.13212). Implemented: Section 3.2, the
learnable channel-wise transformation ``MLP(F) = W_2(sigma(W_1(F)))`` of
Eq. 2 applied to the student feature in the loss of Eq. 3 and Algorithm 1;
the "deeper" and "wider" ablations of Section 4.4.2 (Table 7).
"""
from typing import Optional

import torch
import torch.nn as nn
from mmengine.model import BaseModule

from mmdistill.registry import MODELS


@MODELS.register_module()
class MLPConnector(BaseModule):
    """Student-side channel-wise MLP: ``conv1x1 -> ReLU -> conv1x1``.

    ``S' = W_2 * ReLU(W_1 * S + b_1) + b_2`` with 1x1 convolutions, applied to
    the student feature only; the teacher feature is left untouched (Eq. 2
    and 3 of the MLP-connector paper). ``num_hidden_layers`` > 1 gives the
    "deeper" ablation (``conv1x1 -> ReLU`` repeated), a larger
    ``hidden_channels`` the "wider" one (Table 7).

    Args:
        in_channels (int): Channels of the student feature.
        out_channels (int): Channels of the teacher feature.
        hidden_channels (int, optional): Width of the hidden layers.
            Defaults to ``out_channels`` (the teacher's channels).
        num_hidden_layers (int): Number of ``conv1x1 -> ReLU`` blocks before
            the output conv. Defaults to 1 (the paper's MLP).
        init_cfg (dict, optional): mmengine init config.
    """

    def __init__(self,
                 in_channels: int,
                 out_channels: int,
                 hidden_channels: Optional[int] = None,
                 num_hidden_layers: int = 1,
                 init_cfg: Optional[dict] = None) -> None:
        super().__init__(init_cfg=init_cfg)
        if num_hidden_layers < 1:
            raise ValueError(
                f'num_hidden_layers must be >= 1, got {num_hidden_layers}')
        hidden_channels = hidden_channels or out_channels
        layers = []
        channels = in_channels
        for _ in range(num_hidden_layers):
            layers += [nn.Conv2d(channels, hidden_channels, 1),
                       nn.ReLU(inplace=True)]
            channels = hidden_channels
        layers.append(nn.Conv2d(channels, out_channels, 1))
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.mlp = nn.Sequential(*layers)

    def forward(self,
                student: torch.Tensor,
                teacher: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Map the student feature to the teacher's channels.

        Args:
            student (torch.Tensor): Student feature ``(N, C_s, H, W)``.
            teacher (torch.Tensor, optional): Unused (the teacher is never
                transformed, MLP-connector paper, Section 4.4.3).

        Returns:
            torch.Tensor: ``(N, C_t, H, W)``.
        """
        return self.mlp(student)
