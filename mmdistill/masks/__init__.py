"""Reusable masks: the attention and box masks of FGD ("Focal and Global
Knowledge Distillation for Detectors", Yang et al., CVPR 2022) and the random
masks of MGD ("Masked Generative Distillation", Yang et al., ECCV 2022)."""
from .attention import channel_attention, spatial_attention
from .box import box_masks
from .random import check_ratio, random_channel_mask, random_spatial_mask

__all__ = [
    'spatial_attention', 'channel_attention', 'box_masks',
    'random_spatial_mask', 'random_channel_mask', 'check_ratio'
]
