"""Helpers to run real configs small (tests, config checks)."""
from .batches import KIND_OF_SCOPE, random_batch
from .tiny import (random_checkpoint, shrink_classifier, shrink_detector,
                   shrink_distiller, shrink_segmentor, teacher_overrides,
                   tiny_classification, tiny_detection, tiny_model,
                   tiny_segmentation, use_random_teacher,
                   write_imagenet_layout)

__all__ = [
    'KIND_OF_SCOPE', 'random_batch',
    'random_checkpoint', 'shrink_classifier', 'shrink_detector',
    'shrink_distiller', 'shrink_segmentor', 'teacher_overrides',
    'tiny_classification', 'tiny_detection', 'tiny_model',
    'tiny_segmentation', 'use_random_teacher', 'write_imagenet_layout'
]
