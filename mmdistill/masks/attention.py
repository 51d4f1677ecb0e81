"""Spatial and channel attention masks of FGD.

Reference: Z. Yang et al., "Focal and Global Knowledge Distillation for
Detectors", CVPR 2022 (arXiv:2111.11837), Eq. 5-6. For a feature ``F`` of shape
``(N, C, H, W)`` and a temperature ``t``:

* spatial attention ``A_S = H * W * softmax_{H*W}(mean_c |F| / t)``,
* channel attention ``A_C = C * softmax_C(mean_{h,w} |F| / t)``.

Both are scaled so that they average to 1 over their axis, i.e. ``A_S`` sums
to ``H * W`` per image and ``A_C`` sums to ``C`` per image.
"""
import torch
import torch.nn.functional as F


def _check_feat(feat: torch.Tensor, tau: float) -> None:
    if feat.dim() != 4:
        raise ValueError('attention expects a feature of shape (N, C, H, W), '
                         f'got {tuple(feat.shape)}')
    if tau <= 0:
        raise ValueError(f'tau must be positive, got {tau}')


def spatial_attention(feat: torch.Tensor,
                      tau: float = 0.5) -> torch.Tensor:
    """Spatial attention of FGD (Yang et al., CVPR 2022, Eq. 5).

    ``A_S[n, y, x] = H * W * exp(G[n, y, x] / t) / sum_{y', x'} exp(G[n, y',
    x'] / t)`` with ``G = mean_c |F|`` (the mean over channels of the absolute
    feature).

    Args:
        feat (torch.Tensor): Feature of shape ``(N, C, H, W)``.
        tau (float): Softmax temperature t. Defaults to 0.5.

    Returns:
        torch.Tensor: Attention of shape ``(N, H, W)``, same dtype as ``feat``,
        summing to ``H * W`` for every image.
    """
    _check_feat(feat, tau)
    n, _, h, w = feat.shape
    g = feat.abs().mean(dim=1).reshape(n, h * w)
    return (h * w * F.softmax(g / tau, dim=1)).reshape(n, h, w)


def channel_attention(feat: torch.Tensor,
                      tau: float = 0.5) -> torch.Tensor:
    """Channel attention of FGD (Yang et al., CVPR 2022, Eq. 6).

    ``A_C[n, c] = C * exp(G[n, c] / t) / sum_{c'} exp(G[n, c'] / t)`` with
    ``G = mean_{h,w} |F|`` (the mean over positions of the absolute feature).

    Args:
        feat (torch.Tensor): Feature of shape ``(N, C, H, W)``.
        tau (float): Softmax temperature t. Defaults to 0.5.

    Returns:
        torch.Tensor: Attention of shape ``(N, C)``, same dtype as ``feat``,
        summing to ``C`` for every image.
    """
    _check_feat(feat, tau)
    c = feat.shape[1]
    g = feat.abs().mean(dim=(2, 3))
    return c * F.softmax(g / tau, dim=1)
