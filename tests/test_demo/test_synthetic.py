"""The demo's scene writer (``demo/synthetic.py``): deterministic scenes,
boxes and label maps that agree, photo content from scikit-image (the
``[demo]`` extra) or procedural, and object crops for classification."""
import json
import os.path as osp
import sys

import numpy as np
import pytest

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from demo.synthetic import (PhotoBank, generate, photo_bank,  # noqa: E402
                            write_crops, write_synth_dataset)
from mmdistill.datasets import SYNTH_CLASSES  # noqa: E402

SCENE = dict(max_objects=4, distractors=2, random_tint=True, clutter=2,
             scale_range=(0.2, 0.5))


@pytest.fixture(scope='module')
def synth_root(tmp_path_factory):
    root = str(tmp_path_factory.mktemp('synth'))
    write_synth_dataset(root, dict(train=6, val=4), size=(64, 64), seed=3,
                        **SCENE)
    return root


def _read(path):
    with open(path, 'rb') as f:
        return f.read()


def test_generation_is_deterministic(tmp_path):
    a, b, c = (str(tmp_path / n) for n in 'abc')
    for root, seed in ((a, 1), (b, 1), (c, 2)):
        write_synth_dataset(root, dict(val=3), size=(48, 64), seed=seed,
                            **SCENE)
    for name in ('images/val/val_00002.png', 'labels/val/val_00002.png',
                 'annotations/val.json'):
        assert _read(osp.join(a, name)) == _read(osp.join(b, name))
    assert (_read(osp.join(a, 'images/val/val_00000.png')) != _read(
        osp.join(c, 'images/val/val_00000.png')))


def test_labels_boxes_and_classes_agree(synth_root):
    import cv2
    with open(osp.join(synth_root, 'annotations', 'train.json')) as f:
        coco = json.load(f)
    assert [c['name'] for c in coco['categories']] == list(SYNTH_CLASSES)
    assert len(coco['images']) == 6 and coco['annotations']
    for ann in coco['annotations']:
        image = coco['images'][ann['image_id'] - 1]
        labels = cv2.imread(
            osp.join(synth_root, 'labels', 'train', image['file_name']),
            cv2.IMREAD_UNCHANGED)
        x, y, w, h = ann['bbox']
        assert w > 0 and h > 0
        assert x >= 0 and y >= 0 and x + w <= 64 and y + h <= 64
        crop = labels[int(y):int(y + h), int(x):int(x + w)]
        # the visible part of the object is labelled with its class
        assert (crop == ann['category_id']).any()
    image = cv2.imread(osp.join(synth_root, 'images', 'train',
                                'train_00000.png'))
    assert image.shape == (64, 64, 3) and image.dtype == np.uint8


def test_photos_from_scikit_image_or_procedural(tmp_path):
    bank = photo_bank()
    if bank is None:  # scikit-image not installed: procedural content
        written = generate(str(tmp_path), ['a', 'b'], dict(val=1),
                           size=(32, 32), photos=True)
        assert written['val']['photos'] is False
        return
    assert isinstance(bank, PhotoBank)
    assert bank.backgrounds and bank.textures
    rng = np.random.default_rng(0)
    assert bank.background(rng, 20, 30).shape == (20, 30, 3)
    tex = bank.texture(rng, 1, 10, 12, np.array([200., 50., 50.]))
    assert tex.shape == (10, 12, 3) and tex.dtype == np.uint8
    written = generate(str(tmp_path), ['a', 'b'], dict(val=1),
                       size=(32, 32), photos=True)
    assert written['val']['photos'] is True


def test_procedural_fallback(tmp_path):
    written = generate(str(tmp_path), ['a', 'b', 'c'], dict(val=2),
                       size=(32, 48), photos=False, distractors=1,
                       random_tint=True)
    assert written['val']['photos'] is False
    assert osp.isfile(osp.join(str(tmp_path), 'images', 'val',
                               'val_00001.png'))


def test_crops_for_classification(synth_root, tmp_path):
    import cv2
    dst = str(tmp_path / 'crops')
    written = write_crops(synth_root, dst, ['train', 'val'], size=24,
                          min_side=4)
    with open(osp.join(synth_root, 'annotations', 'val.json')) as f:
        coco = json.load(f)
    kept = [a for a in coco['annotations'] if min(a['bbox'][2:]) >= 4]
    assert written['val']['count'] == len(kept) > 0
    with open(written['val']['ann_file']) as f:
        lines = f.read().split()
    names, labels = lines[0::2], [int(v) for v in lines[1::2]]
    assert labels == [a['category_id'] - 1 for a in kept]
    assert all(0 <= label < len(SYNTH_CLASSES) for label in labels)
    crop = cv2.imread(osp.join(dst, names[0]))
    assert crop.shape == (24, 24, 3)
    # mmpretrain reads it as it is
    pytest.importorskip('mmpretrain')
    from mmpretrain.datasets import CustomDataset
    dataset = CustomDataset(
        data_root=dst, ann_file='annotations/val.txt',
        metainfo=dict(classes=SYNTH_CLASSES), pipeline=[])
    assert len(dataset) == len(kept)
    assert dataset.get_data_info(0)['gt_label'] == labels[0]
