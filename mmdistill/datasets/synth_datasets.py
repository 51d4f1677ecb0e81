"""Registered mmdet / mmseg datasets for the scenes of :mod:`.synthetic`.

:func:`write_synth_dataset` writes a dataset in the layout these classes
read (``generate`` with the six shape classes below):

* ``SynthDetDataset`` (an mmdet ``CocoDataset``): ``ann_file=
  'annotations/train.json'``, ``data_prefix=dict(img='images/train/')``;
* ``SynthSegDataset`` (an mmseg ``BaseSegDataset``): ``data_prefix=dict(
  img_path='images/train', seg_map_path='labels/train')``; label 0 is the
  background class, ``k + 1`` the object class k.

Both carry ``METAINFO`` (classes, palette), so mmdet's ``CocoMetric`` (bbox
mAP) and mmseg's ``IoUMetric`` (mIoU) evaluate them unchanged, and
checkpoints trained on them store the class names.
"""
from typing import Dict, Tuple

from mmdet.datasets import CocoDataset
from mmseg.datasets import BaseSegDataset

from mmdistill.registry import DATASETS
from .synthetic import SHAPES, generate

# One class per shape of the generator (class k has shape SHAPES[k]).
SYNTH_CLASSES = ('box', 'disc', 'triangle', 'diamond', 'ring', 'cross')
SYNTH_PALETTE = [(220, 20, 60), (0, 130, 200), (60, 180, 75),
                 (255, 225, 25), (145, 30, 180), (245, 130, 48)]
assert len(SYNTH_CLASSES) == len(SHAPES)


@DATASETS.register_module()
class SynthDetDataset(CocoDataset):
    """Generated detection scenes in COCO format (six shape classes).

    Written by :func:`write_synth_dataset`; any COCO json whose categories
    are :data:`SYNTH_CLASSES` works.
    """
    METAINFO = dict(classes=SYNTH_CLASSES, palette=SYNTH_PALETTE)


@DATASETS.register_module()
class SynthSegDataset(BaseSegDataset):
    """Generated segmentation scenes: ``images/<split>/*.png`` with label
    maps ``labels/<split>/*.png`` (0 = background, ``k + 1`` = class k)."""
    METAINFO = dict(
        classes=('background', ) + SYNTH_CLASSES,
        palette=[(0, 0, 0)] + SYNTH_PALETTE)

    def __init__(self,
                 img_suffix: str = '.png',
                 seg_map_suffix: str = '.png',
                 reduce_zero_label: bool = False,
                 **kwargs) -> None:
        super().__init__(
            img_suffix=img_suffix,
            seg_map_suffix=seg_map_suffix,
            reduce_zero_label=reduce_zero_label,
            **kwargs)


def write_synth_dataset(root: str,
                        splits: Dict[str, int],
                        size: Tuple[int, int] = (96, 96),
                        seed: int = 0,
                        photos: bool = True,
                        **options) -> Dict[str, dict]:
    """Write scenes of the six :data:`SYNTH_CLASSES` under ``root`` for
    :class:`SynthDetDataset` and :class:`SynthSegDataset`.

    Args:
        root (str): Output folder.
        splits (dict): Split name -> number of images.
        size (tuple): Image (height, width).
        seed (int): The same seed writes the same files.
        photos (bool): Use scikit-image's sample photos for backgrounds and
            textures (procedural textures when it is not installed).
        **options: ``max_objects``, ``scale_range``, ``clutter``,
            ``distractors``, ``random_tint``, ``min_objects``,
            ``tint_jitter`` of
            :func:`generate`.

    Returns:
        dict: What :func:`generate` returns.
    """
    return generate(
        root, SYNTH_CLASSES, splits, size=size, seed=seed, photos=photos,
        **options)
