"""Registered datasets of the demo's generated scenes (no download needed).

The scene writer itself (``write_synth_dataset``, ``generate``,
``write_coco_layout``, ``write_cityscapes_layout``, ``photo_bank``) is demo
material and lives in ``demo/synthetic.py``; it needs the ``[demo]`` extra
(scikit-image) for photo content.
"""
from .synth_datasets import (SYNTH_CLASSES, SYNTH_PALETTE, SynthDetDataset,
                             SynthSegDataset)

__all__ = [
    'SYNTH_CLASSES', 'SYNTH_PALETTE', 'SynthDetDataset', 'SynthSegDataset'
]
