"""Datasets mmdistill generates (no download needed)."""
from .synth_datasets import (SYNTH_CLASSES, SYNTH_PALETTE, SynthDetDataset,
                             SynthSegDataset, write_synth_dataset)
from .synthetic import (PhotoBank, generate, photo_bank,
                        write_cityscapes_layout, write_coco_layout)

__all__ = [
    'generate', 'write_cityscapes_layout', 'write_coco_layout', 'PhotoBank',
    'photo_bank', 'SYNTH_CLASSES', 'SYNTH_PALETTE', 'SynthDetDataset',
    'SynthSegDataset', 'write_synth_dataset'
]
