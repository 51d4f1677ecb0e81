"""Identity connector: the "Identity" row of the MLP-connector paper's
Tables 1 and 6.

Paper: "A Simple and Generic Framework for Feature Distillation via
Channel-wise Transformation", Ziwei Liu, Yongtao Wang, Xiaojie Chu et al.,
ICCV Workshops 2023 (arXiv:2303.13212). Implemented: the
"Identity" transformation of Section 4.4.1 (direct mimicking of the teacher
feature, the baseline of Tables 1 and 6).
"""
from typing import Optional

import torch
from mmengine.model import BaseModule

from mmdistill.registry import MODELS


@MODELS.register_module()
class IdentityConnector(BaseModule):
    """Pass the student feature through unchanged: ``S' = S``.

    The student mimics the teacher feature directly (FitNets-style naive
    feature distillation; "Identity" in the MLP-connector paper,
    arXiv:2303.13212, Tables 1 and 6). It has no
    parameters, so student and teacher must have the same shape.

    Args:
        in_channels (int, optional): Student channels, only checked.
        out_channels (int, optional): Teacher channels, only checked.
        init_cfg (dict, optional): mmengine init config.
    """

    def __init__(self,
                 in_channels: Optional[int] = None,
                 out_channels: Optional[int] = None,
                 init_cfg: Optional[dict] = None) -> None:
        super().__init__(init_cfg=init_cfg)
        if (in_channels is not None and out_channels is not None
                and in_channels != out_channels):
            raise ValueError(
                f'IdentityConnector cannot map {in_channels} student '
                f'channels to {out_channels} teacher channels; use '
                'LinearConnector, MLPConnector or ConvConnector instead.')
        self.in_channels = in_channels
        self.out_channels = out_channels

    def forward(self,
                student: torch.Tensor,
                teacher: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Return the student feature itself.

        Args:
            student (torch.Tensor): Student feature ``(N, C, H, W)``.
            teacher (torch.Tensor, optional): Teacher feature; when given,
                its shape must equal the student's.

        Returns:
            torch.Tensor: ``student``.
        """
        if teacher is not None and teacher.shape != student.shape:
            raise ValueError(
                f'IdentityConnector needs student and teacher features of '
                f'the same shape, got {tuple(student.shape)} and '
                f'{tuple(teacher.shape)}; use a connector with parameters '
                '(LinearConnector, MLPConnector, ConvConnector) to map the '
                'channels, or tap layers of the same size.')
        return student


__all__ = ['IdentityConnector']
