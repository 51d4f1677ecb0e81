"""Random binary masks, as used by MGD ("Masked Generative Distillation",
Zhendong Yang et al., ECCV 2022, arXiv:2205.01529; the random mask of its
Section 3, ``M = 0`` where a uniform draw falls below the ratio ``lambda``)
to hide part of the student feature before the generation block.

Each position (or channel) is masked independently with probability
``ratio``: a uniform draw ``u ~ U[0, 1)`` is taken per position and the mask is
``0`` where ``u > 1 - ratio`` and ``1`` elsewhere, so the expected fraction of
zeros is ``ratio``.
"""
from typing import Optional, Union

import torch


def check_ratio(ratio: float) -> None:
    """Raise a ``ValueError`` unless ``0 <= ratio <= 1``."""
    if not 0.0 <= ratio <= 1.0:
        raise ValueError(f'mask ratio must lie in [0, 1], got {ratio}')


def _bernoulli_keep(shape, ratio: float, device, generator) -> torch.Tensor:
    check_ratio(ratio)
    if generator is not None and device is None:
        device = generator.device
    u = torch.rand(shape, device=device, generator=generator)
    return (u <= 1.0 - ratio).float()


def random_spatial_mask(n: int,
                        h: int,
                        w: int,
                        ratio: float,
                        device: Optional[Union[str, torch.device]] = None,
                        generator: Optional[torch.Generator] = None
                        ) -> torch.Tensor:
    """Random spatial mask shared by all channels of a position.

    ``M[i, 0, y, x] = 0`` with probability ``ratio`` (drawn independently per
    image and position, ``u > 1 - ratio`` with ``u ~ U[0, 1)``), ``1``
    otherwise.

    Args:
        n (int): Batch size N.
        h (int): Height H of the feature map.
        w (int): Width W of the feature map.
        ratio (float): Probability in ``[0, 1]`` that a position is masked
            (MGD's lambda: 0.65 one-stage detectors, 0.45 two-stage, 0.75
            segmentation).
        device (str | torch.device, optional): Device of the mask. Defaults to
            the generator's device, else the default device.
        generator (torch.Generator, optional): Random generator for
            reproducible masks.

    Returns:
        torch.Tensor: float32 mask of shape ``(N, 1, H, W)`` with values in
        ``{0, 1}``; multiply it onto an ``(N, C, H, W)`` feature.
    """
    return _bernoulli_keep((n, 1, h, w), ratio, device, generator)


def random_channel_mask(n: int,
                        c: int,
                        ratio: float,
                        device: Optional[Union[str, torch.device]] = None,
                        generator: Optional[torch.Generator] = None
                        ) -> torch.Tensor:
    """Random channel mask shared by all positions of a channel.

    ``M[i, k, 0, 0] = 0`` with probability ``ratio`` (drawn independently per
    image and channel, ``u > 1 - ratio`` with ``u ~ U[0, 1)``), ``1``
    otherwise.

    Args:
        n (int): Batch size N.
        c (int): Number of channels C.
        ratio (float): Probability in ``[0, 1]`` that a channel is masked.
        device (str | torch.device, optional): Device of the mask. Defaults to
            the generator's device, else the default device.
        generator (torch.Generator, optional): Random generator for
            reproducible masks.

    Returns:
        torch.Tensor: float32 mask of shape ``(N, C, 1, 1)`` with values in
        ``{0, 1}``.
    """
    return _bernoulli_keep((n, c, 1, 1), ratio, device, generator)
