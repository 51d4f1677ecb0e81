"""Datasets mmdistill generates (no download needed)."""
from .synthetic import generate, write_cityscapes_layout, write_coco_layout

__all__ = ['generate', 'write_cityscapes_layout', 'write_coco_layout']
