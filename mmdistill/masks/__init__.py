"""Reusable masks: the attention and box masks of FGD ("Focal and Global
Knowledge Distillation for Detectors", Zhendong Yang et al., CVPR 2022,
arXiv:2111.11837) and the random masks of MGD ("Masked Generative
Distillation", Zhendong Yang et al., ECCV 2022, arXiv:2205.01529)."""
from .attention import channel_attention, spatial_attention
from .box import (BoxMaskCache, PaddedBoxes, box_masks, box_masks_levels,
                  pad_boxes)
from .random import check_ratio, random_channel_mask, random_spatial_mask

__all__ = [
    'spatial_attention', 'channel_attention', 'box_masks',
    'box_masks_levels', 'pad_boxes', 'PaddedBoxes', 'BoxMaskCache',
    'random_spatial_mask', 'random_channel_mask', 'check_ratio'
]
