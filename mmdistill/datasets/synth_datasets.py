"""Registered mmdet / mmseg datasets for the demo's generated scenes.

The demo's scene writer (``write_synth_dataset`` in ``demo/synthetic.py``;
its photo content needs the ``[demo]`` extra, scikit-image) writes a dataset
in the layout these classes read, with the six shape classes below:

* ``SynthDetDataset`` (an mmdet ``CocoDataset``): ``ann_file=
  'annotations/train.json'``, ``data_prefix=dict(img='images/train/')``;
* ``SynthSegDataset`` (an mmseg ``BaseSegDataset``): ``data_prefix=dict(
  img_path='images/train', seg_map_path='labels/train')``; label 0 is the
  background class, ``k + 1`` the object class k.

Both carry ``METAINFO`` (classes, palette), so mmdet's ``CocoMetric`` (bbox
mAP) and mmseg's ``IoUMetric`` (mIoU) evaluate them unchanged, and
checkpoints trained on them store the class names. Nothing here needs
scikit-image.
"""
from mmdet.datasets import CocoDataset
from mmseg.datasets import BaseSegDataset

from mmdistill.registry import DATASETS

# One class per shape of the demo's generator: class k is drawn with its
# shape k (rectangle, ellipse, triangle, diamond, ring, cross).
SYNTH_CLASSES = ('box', 'disc', 'triangle', 'diamond', 'ring', 'cross')
SYNTH_PALETTE = [(220, 20, 60), (0, 130, 200), (60, 180, 75),
                 (255, 225, 25), (145, 30, 180), (245, 130, 48)]


@DATASETS.register_module()
class SynthDetDataset(CocoDataset):
    """Generated detection scenes in COCO format (six shape classes).

    Written by the demo's ``write_synth_dataset``; any COCO json whose
    categories are :data:`SYNTH_CLASSES` works.
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
