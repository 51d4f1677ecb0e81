"""Non-local connector: the "Non-Local" row of the MLP-connector paper's
Table 7.

Paper: "A Simple and Generic Framework for Feature Distillation via
Channel-wise Transformation", Ziwei Liu, Yongtao Wang, Xiaojie Chu et al.,
ICCV Workshops 2023 (arXiv:2303.13212), Section 4.4.2 and Table 7 (the
global spatial transformation); the block is Wang et al., "Non-local Neural
Networks", CVPR 2018, its reference [26].
"""
from typing import Optional

import torch
import torch.nn as nn
from mmcv.cnn import NonLocal2d
from mmengine.model import BaseModule

from mmdistill.registry import MODELS


@MODELS.register_module()
class NonLocalConnector(BaseModule):
    r"""Non-local block on the student, then a 1x1 projection if needed.

    With the default embedded-Gaussian mode of ``mmcv.cnn.NonLocal2d``::

        A = softmax_j(theta(S)_i . phi(S)_j / sqrt(C_i))   # C_i = C_s / r
        Z = S + W_z (sum_j A[i, j] g(S)_j)                 # non-local block
        S' = P Z + b    (1x1 conv, only when C_s != C_t; else S' = Z)

    ``theta``, ``phi`` and ``g`` are 1x1 convs to ``C_s / reduction``
    channels and ``W_z`` a 1x1 conv back to ``C_s`` (zero-initialised by
    default, so the block starts as the identity). "Non-Local" of the
    MLP-connector paper (arXiv:2303.13212, Table 7).

    Args:
        in_channels (int): Channels of the student feature.
        out_channels (int): Channels of the teacher feature.
        reduction (int): Channel reduction of the embeddings. Defaults to 2.
        use_scale (bool): Divide the pairwise logits by ``sqrt(C_i)``.
            Defaults to True.
        mode (str): Pairwise function of ``NonLocal2d``
            (``'embedded_gaussian'``, ``'gaussian'``, ``'dot_product'``,
            ``'concatenation'``). Defaults to ``'embedded_gaussian'``.
        sub_sample (bool): Max-pool ``phi`` and ``g`` by 2. Defaults to
            False.
        norm_cfg (dict, optional): Norm layer after ``W_z``. Defaults to
            None.
        zeros_init (bool): Zero-initialise ``W_z`` (or its norm). Defaults
            to True.
        init_cfg (dict, optional): mmengine init config.
    """

    def __init__(self,
                 in_channels: int,
                 out_channels: int,
                 reduction: int = 2,
                 use_scale: bool = True,
                 mode: str = 'embedded_gaussian',
                 sub_sample: bool = False,
                 norm_cfg: Optional[dict] = None,
                 zeros_init: bool = True,
                 init_cfg: Optional[dict] = None) -> None:
        super().__init__(init_cfg=init_cfg)
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.zeros_init = zeros_init
        self.non_local = NonLocal2d(
            in_channels,
            sub_sample=sub_sample,
            reduction=reduction,
            use_scale=use_scale,
            mode=mode,
            norm_cfg=norm_cfg,
            zeros_init=zeros_init)
        self.proj = (
            nn.Conv2d(in_channels, out_channels, 1)
            if in_channels != out_channels else nn.Identity())

    def init_weights(self) -> None:
        """Initialise the weights, keeping ``NonLocal2d``'s own scheme."""
        super().init_weights()
        if self.init_cfg is None:
            self.non_local.init_weights(zeros_init=self.zeros_init)

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
        return self.proj(self.non_local(student))


__all__ = ['NonLocalConnector']
