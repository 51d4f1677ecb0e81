"""Shrunken real distillation configs over generated data."""
import copy
import os.path as osp

import pytest
from mmengine.config import Config

from mmdistill.datasets import write_cityscapes_layout, write_coco_layout
from mmdistill.testing import (random_checkpoint, teacher_overrides,
                               tiny_detection, tiny_model, tiny_segmentation)
from mmdistill.utils.config import load_config

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
CONFIGS = {
    'retinanet': 'configs/mlp/mlp_fpn_retinanet_x101-r50_2x_coco.py',
    'faster_rcnn':
    'configs/mlp/mlp_fpn_cascade-mask-rcnn-x101_faster-rcnn-r50_2x_coco.py',
    'pspnet':
    'configs/mlp/mlp_backbone_pspnet_r101-r18_80k_cityscapes-512x1024.py',
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


def shrink_models(cfg: Config, kind: str, same_shape: bool = False):
    """Student width 8, teacher width 16 (or the student's shape), and the
    connectors' channels to match. Returns the teacher model config."""
    cfg.model.student = tiny_model(cfg.model.student, kind, width=8,
                                   **({'fpn_channels': 16}
                                      if kind == 'det' else {}))
    teacher_cfg = load_config(cfg.model.teacher.config)
    if same_shape:
        teacher = copy.deepcopy(cfg.model.student)
        teacher.pop('data_preprocessor', None)
        teacher['data_preprocessor'] = teacher_cfg.model.data_preprocessor
        channels = (16, 16) if kind == 'det' else (64, 64)
    else:
        teacher = tiny_model(teacher_cfg.model, kind, width=16,
                             **({'fpn_channels': 32}
                                if kind == 'det' else {}))
        channels = (16, 32) if kind == 'det' else (64, 128)
    if kind == 'det':  # an untrained detector scores ~0.01: keep its boxes
        test_cfg = cfg.model.student.test_cfg
        for stage in [test_cfg] + [v for v in test_cfg.values()
                                   if isinstance(v, dict)]:
            if 'score_thr' in stage:
                stage.score_thr = 0.0
                stage.max_per_img = 20
    for pair in cfg.model.distill.values():
        connector = pair.get('connector')
        if connector is not None:
            connector.in_channels, connector.out_channels = channels
    return teacher, teacher_cfg.default_scope


@pytest.fixture
def tiny_cfg(coco_root, cityscapes_root, tmp_path):
    """``tiny_cfg(name, work_dir=None, same_shape=False)`` -> (cfg, teacher
    checkpoint path) for one of ``CONFIGS``, ready for ``Runner.from_cfg``."""
    cache = {}

    def make(name, work_dir=None, same_shape=False, **kwargs):
        cfg = Config.fromfile(osp.join(ROOT, CONFIGS[name]))
        kind = KIND[name]
        teacher, scope = shrink_models(cfg, kind, same_shape)
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
