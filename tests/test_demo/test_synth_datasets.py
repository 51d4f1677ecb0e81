"""The generated scenes and their registered mmdet / mmseg datasets."""
import json
import os.path as osp

import numpy as np
import pytest
import torch
from mmengine.registry import DefaultScope

from mmdistill.datasets import (SYNTH_CLASSES, PhotoBank, SynthDetDataset,
                                SynthSegDataset, generate, photo_bank,
                                write_synth_dataset)
from mmdistill.registry import DATASETS

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


def _seg_dataset(root):
    # as in an mmseg config: the runner's default scope is mmseg
    with DefaultScope.overwrite_default_scope('mmseg'):
        return DATASETS.build(
            dict(
                type='mmdistill.SynthSegDataset',
                data_root=root,
                data_prefix=dict(img_path='images/val',
                                 seg_map_path='labels/val'),
                test_mode=True,
                pipeline=[
                    dict(type='LoadImageFromFile'),
                    dict(type='LoadAnnotations'),
                    dict(type='PackSegInputs'),
                ]))


def test_seg_dataset_loads_and_evaluates(synth_root):
    from mmseg.evaluation import IoUMetric
    dataset = _seg_dataset(synth_root)
    assert isinstance(dataset, SynthSegDataset)
    assert len(dataset) == 4
    assert dataset.metainfo['classes'] == ('background', ) + SYNTH_CLASSES
    assert len(dataset.metainfo['palette']) == len(SYNTH_CLASSES) + 1
    item = dataset[0]
    gt = item['data_samples'].gt_sem_seg.data
    assert item['inputs'].shape == (3, 64, 64)
    assert gt.shape == (1, 64, 64) and int(gt.max()) <= len(SYNTH_CLASSES)
    metric = IoUMetric(iou_metrics=['mIoU'])
    metric.dataset_meta = dataset.metainfo
    samples = []
    for i in range(len(dataset)):
        sample = dataset[i]['data_samples'].to_dict()
        sample['pred_sem_seg'] = dict(data=sample['gt_sem_seg']['data'])
        samples.append(sample)
    metric.process([], samples)
    result = metric.evaluate(len(samples))
    assert result['mIoU'] == pytest.approx(100.0)
    # a wrong prediction (all background) scores less
    metric = IoUMetric(iou_metrics=['mIoU'])
    metric.dataset_meta = dataset.metainfo
    for sample in samples:
        sample['pred_sem_seg'] = dict(
            data=torch.zeros_like(sample['gt_sem_seg']['data']))
    metric.process([], samples)
    assert metric.evaluate(len(samples))['mIoU'] < 50


def test_det_dataset_loads_and_evaluates(synth_root):
    from mmdet.evaluation import CocoMetric
    with DefaultScope.overwrite_default_scope('mmdet'):
        dataset = DATASETS.build(
            dict(
                type='mmdistill.SynthDetDataset',
                data_root=synth_root,
                ann_file='annotations/val.json',
                data_prefix=dict(img='images/val/'),
                test_mode=True,
                pipeline=[
                    dict(type='LoadImageFromFile'),
                    dict(type='LoadAnnotations', with_bbox=True),
                    dict(
                        type='PackDetInputs',
                        meta_keys=('img_id', 'img_path', 'ori_shape',
                                   'img_shape')),
                ]))
    assert isinstance(dataset, SynthDetDataset)
    assert len(dataset) == 4
    assert dataset.metainfo['classes'] == SYNTH_CLASSES
    metric = CocoMetric(
        ann_file=osp.join(synth_root, 'annotations', 'val.json'),
        metric='bbox')
    metric.dataset_meta = dataset.metainfo
    samples = []
    for i in range(len(dataset)):
        sample = dataset[i]['data_samples']
        gt = sample.gt_instances
        samples.append(
            dict(
                img_id=sample.img_id,
                ori_shape=sample.ori_shape,
                pred_instances=dict(
                    bboxes=gt.bboxes.tensor if hasattr(
                        gt.bboxes, 'tensor') else gt.bboxes,
                    labels=gt.labels,
                    scores=torch.ones(len(gt.labels)))))
    metric.process([], samples)
    result = metric.evaluate(len(samples))
    assert result['coco/bbox_mAP'] == pytest.approx(1.0)
