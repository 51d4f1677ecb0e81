"""Helpers to run real configs small (tests, config checks)."""
from .tiny import (random_checkpoint, shrink_classifier, shrink_detector,
                   shrink_distiller, shrink_segmentor, teacher_overrides,
                   tiny_classification, tiny_detection, tiny_model,
                   tiny_segmentation, write_imagenet_layout)

__all__ = [
    'random_checkpoint', 'shrink_classifier', 'shrink_detector',
    'shrink_distiller', 'shrink_segmentor', 'teacher_overrides',
    'tiny_classification', 'tiny_detection', 'tiny_model',
    'tiny_segmentation', 'write_imagenet_layout'
]
