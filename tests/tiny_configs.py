"""The shipped configs the tests shrink and run, in one table: the
``tiny_cfg`` fixture (``tests/conftest.py``) builds them in-process and
``write_tiny_config`` (``tests/test_tools/tools_support.py``) writes them to
disk for the tools. Both shrink them here.

``tests/conftest.py`` puts this folder on ``sys.path``; this module is not
part of the package.
"""
import os.path as osp

from mmengine.config import Config

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
#: short name -> shipped config, relative to the repository root
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
    'fgd_retinanet':
    'configs/fgd/fgd_fpn_retinanet-x101_retinanet-r50_2x_coco.py',
}
#: 'det' (generated COCO layout) or 'seg' (generated Cityscapes layout)
KIND = dict(
    retinanet='det',
    faster_rcnn='det',
    pspnet='seg',
    deeplabv3='seg',
    fgd_retinanet='det')
# FGD compares the FPN maps without a connector, and inherits the teacher's
# neck and head: the teacher gets the student's shape
SAME_SHAPE = dict(fgd_retinanet=True)


def shrunken_config(name: str, teacher_path: str,
                    same_shape: bool = None) -> Config:
    """The shipped config ``name`` (a key of ``CONFIGS``) with a student of
    width 8 and a teacher of width 16, or of the student's shape
    (``same_shape``; default ``SAME_SHAPE``); FGD losses get the shrunken
    FPN's channels. Random teacher weights are written to ``teacher_path``
    unless that file exists; the config's teacher points at them.

    The runtime (data, schedule, work dir) is still the shipped one: give
    it to :func:`tiny_runtime_of`.
    """
    from mmdistill.testing import (random_checkpoint, shrink_distiller,
                                   teacher_overrides)
    if same_shape is None:
        same_shape = SAME_SHAPE.get(name, False)
    cfg = Config.fromfile(osp.join(ROOT, CONFIGS[name]))
    teacher, scope = shrink_distiller(cfg, KIND[name], same_shape)
    for pair in cfg.model.distill.values():
        if pair['loss'].get('type') == 'FGDLoss':
            pair['loss']['in_channels'] = teacher['neck']['out_channels']
    if not osp.exists(teacher_path):
        random_checkpoint(teacher, teacher_path, scope=scope)
    cfg.model.teacher.checkpoint = teacher_path
    cfg.model.teacher.cfg_options = teacher_overrides(teacher)
    return cfg


def tiny_runtime_of(cfg: Config, name: str, work_dir: str,
                    data_root: str, **kwargs) -> Config:
    """``mmdistill.testing.tiny_detection`` or ``tiny_segmentation`` (by
    ``KIND[name]``) over the generated dataset at ``data_root``; ``kwargs``
    go to it (``epochs=`` / ``iters=``, ...)."""
    from mmdistill.testing import tiny_detection, tiny_segmentation
    tiny = tiny_detection if KIND[name] == 'det' else tiny_segmentation
    tiny(cfg, work_dir, data_root, **kwargs)
    return cfg
