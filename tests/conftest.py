"""Shrunken real distillation configs over generated data."""
import os.path as osp

import pytest
from mmengine.config import Config

from mmdistill.datasets import write_cityscapes_layout, write_coco_layout
from mmdistill.testing import (random_checkpoint, shrink_distiller,
                               teacher_overrides, tiny_detection,
                               tiny_segmentation)

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
CONFIGS = {
    'retinanet':
    'configs/mlp/mlp_fpn_retinanet-x101_retinanet-r50_2x_coco.py',
    'faster_rcnn':
    'configs/mlp/mlp_fpn_cascade-mask-rcnn-x101_faster-rcnn-r50_2x_coco.py',
    'pspnet':
    'configs/mlp/mlp_backbone_pspnet-r101_pspnet-r18_80k_cityscapes-'
    '512x1024.py',
    'deeplabv3':
    'configs/mlp/mlp_backbone_pspnet-r101_deeplabv3-r18_80k_cityscapes-'
    '512x1024.py',
}
KIND = dict(retinanet='det', faster_rcnn='det', pspnet='seg', deeplabv3='seg')


@pytest.fixture(scope='session')
def coco_root(tmp_path_factory):
    return write_coco_layout(
        str(tmp_path_factory.mktemp('coco')), dict(train=4, val=2))


@pytest.fixture(scope='session')
def cityscapes_root(tmp_path_factory):
    return write_cityscapes_layout(
        str(tmp_path_factory.mktemp('cityscapes')), dict(train=4, val=2))


@pytest.fixture(scope='session')
def imagenet_root(tmp_path_factory):
    """Random images in mmpretrain's ImageNet layout (4 train, 2 val)."""
    from mmdistill.testing.tiny import write_imagenet_layout
    return write_imagenet_layout(
        str(tmp_path_factory.mktemp('imagenet')), dict(train=4, val=2))


@pytest.fixture
def tiny_cfg(coco_root, cityscapes_root, tmp_path):
    """``tiny_cfg(name, work_dir=None, same_shape=False)`` -> (cfg, teacher
    checkpoint path) for one of ``CONFIGS``, ready for ``Runner.from_cfg``."""
    cache = {}

    def make(name, work_dir=None, same_shape=False, **kwargs):
        cfg = Config.fromfile(osp.join(ROOT, CONFIGS[name]))
        kind = KIND[name]
        teacher, scope = shrink_distiller(cfg, kind, same_shape)
        key = (name, same_shape)
        if key not in cache:
            cache[key] = random_checkpoint(
                teacher, str(tmp_path / f'{name}_{same_shape}_teacher.pth'),
                scope=scope)
        cfg.model.teacher.checkpoint = cache[key]
        cfg.model.teacher.cfg_options = teacher_overrides(teacher)
        work_dir = work_dir or str(tmp_path / f'{name}_work')
        if kind == 'det':
            tiny_detection(cfg, work_dir, coco_root, **kwargs)
        else:
            tiny_segmentation(cfg, work_dir, cityscapes_root, **kwargs)
        return cfg, cache[key]

    return make
