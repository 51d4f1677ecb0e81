"""Token projector: the projector alignment of ViT attention distillation.

Paper (AttnDistill): "Attention Distillation: self-supervised vision
transformer students need more guidance", Kai Wang, Fei Yang, Joost van de
Weijer, BMVC 2022 (arXiv:2210.00944). Implemented: the projector of its
projector alignment loss: the student's last-layer class token goes through
a learnable projector to the teacher's width and is matched to the
teacher's class token with the mean squared error.
"""
from typing import List, Optional, Sequence, Union

import torch
import torch.nn as nn
from mmengine.model import BaseModule

from mmdistill.registry import MODELS


def _default_hidden(in_channels: int, count: int) -> List[int]:
    """``2C, C, 2C, ...``: the hidden widths of the authors' projector."""
    return [in_channels * (2 if i % 2 == 0 else 1) for i in range(count)]


@MODELS.register_module()
class TokenProjector(BaseModule):
    """Student-side MLP over the channels of tokens ``(N, C)`` or
    ``(N, L, C)``.

    ``LayerNorm -> (Linear -> GELU) x (num_layers - 1) -> Linear ->
    LayerNorm``, applied to the last dimension. The defaults rebuild the
    projector of the AttnDistill authors' code (``proj_layers=4``): hidden
    widths ``2C_s, C_s, 2C_s`` and a LayerNorm at each end (eps 1e-6). The
    teacher is left untouched.

    With ``token_index`` a ``(N, L, C_s)`` input (e.g. the output of the
    student's last block, ``backbone.layers.11``) is first reduced to that
    token, ``(N, C_s)``, so only the class token is projected; a ``(N, C_s)``
    input (e.g. ``backbone[0]`` of an mmpretrain ViT, already the class
    token) is projected as it is.

    Args:
        in_channels (int): Channels of the student tokens.
        out_channels (int): Channels of the teacher tokens.
        hidden_channels (int | list[int], optional): Width of the hidden
            layers: one int for all, or one per hidden layer
            (``num_layers - 1`` values). Defaults to ``2C_s, C_s, 2C_s, ...``.
        num_layers (int): Number of linear layers. Defaults to 4.
        norm_in (bool): LayerNorm on the input. Defaults to True.
        norm_out (bool): LayerNorm on the output. Defaults to True.
        token_index (int, optional): Token taken from a ``(N, L, C)`` input
            (0: the class token). Defaults to None: project every token.
        init_cfg (dict, optional): mmengine init config.
    """

    def __init__(self,
                 in_channels: int,
                 out_channels: int,
                 hidden_channels: Optional[Union[int, Sequence[int]]] = None,
                 num_layers: int = 4,
                 norm_in: bool = True,
                 norm_out: bool = True,
                 token_index: Optional[int] = None,
                 init_cfg: Optional[dict] = None) -> None:
        super().__init__(init_cfg=init_cfg)
        if num_layers < 1:
            raise ValueError(
                f'TokenProjector needs num_layers >= 1, got {num_layers}.')
        if hidden_channels is None:
            hidden = _default_hidden(in_channels, num_layers - 1)
        elif isinstance(hidden_channels, int):
            hidden = [hidden_channels] * (num_layers - 1)
        else:
            hidden = list(hidden_channels)
            if len(hidden) != num_layers - 1:
                raise ValueError(
                    f'TokenProjector: hidden_channels lists {len(hidden)} '
                    f'widths but num_layers={num_layers} has '
                    f'{num_layers - 1} hidden layers; give one width per '
                    'hidden layer or a single int.')
        widths = [in_channels] + hidden + [out_channels]
        layers: List[nn.Module] = []
        if norm_in:
            layers.append(nn.LayerNorm(in_channels, eps=1e-6))
        for i in range(num_layers):
            layers.append(nn.Linear(widths[i], widths[i + 1]))
            if i < num_layers - 1:
                layers.append(nn.GELU())
        if norm_out:
            layers.append(nn.LayerNorm(out_channels, eps=1e-6))
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.token_index = token_index
        self.mlp = nn.Sequential(*layers)

    def forward(self,
                student: torch.Tensor,
                teacher: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Project the student tokens to the teacher's channels.

        Args:
            student (torch.Tensor): ``(N, C_s)`` or ``(N, L, C_s)``.
            teacher (torch.Tensor, optional): Unused.

        Returns:
            torch.Tensor: ``(N, C_t)``, or ``(N, L, C_t)`` for a 3-D input
            without ``token_index``.
        """
        if student.dim() not in (2, 3) or student.shape[-1] != \
                self.in_channels:
            raise ValueError(
                f'TokenProjector expects student tokens (N, {self.in_channels}'
                f') or (N, L, {self.in_channels}), got '
                f'{tuple(student.shape)}: set in_channels to the student\'s '
                'width and tap a token output (e.g. "backbone.layers.11" or '
                '"backbone[0]" of a ViT).')
        if student.dim() == 3 and self.token_index is not None:
            student = student[:, self.token_index]
        return self.mlp(student)


__all__ = ['TokenProjector']
