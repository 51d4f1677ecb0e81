"""The registered mmdet / mmseg datasets of the demo's generated scenes
(``mmdistill.datasets``), which need neither the demo nor scikit-image."""
import os.path as osp
import subprocess
import sys

import pytest
import torch
from mmengine.registry import DefaultScope

from mmdistill.datasets import SYNTH_CLASSES, SynthDetDataset, SynthSegDataset
from mmdistill.registry import DATASETS

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))


@pytest.fixture(scope='module')
def synth_root(tmp_path_factory):
    # the demo's writer, procedural content (no scikit-image needed)
    if ROOT not in sys.path:
        sys.path.insert(0, ROOT)
    from demo.synthetic import write_synth_dataset
    root = str(tmp_path_factory.mktemp('synth'))
    write_synth_dataset(root, dict(train=6, val=4), size=(64, 64), seed=3,
                        photos=False, max_objects=4, distractors=2,
                        clutter=2, scale_range=(0.2, 0.5))
    return root


def test_core_package_has_no_scene_writer():
    """Importing the datasets loads neither the demo's writer nor
    scikit-image, and the package ships no generator module."""
    code = ('import sys, mmdistill, mmdistill.datasets; '
            'bad = [m for m in sys.modules if m.split(".")[0] in '
            '("skimage", "demo")]; '
            'assert not bad, bad')
    proc = subprocess.run([sys.executable, '-c', code], cwd='/',
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    import mmdistill.datasets as datasets
    assert not osp.exists(
        osp.join(osp.dirname(datasets.__file__), 'synthetic.py'))


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
