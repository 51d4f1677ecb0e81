"""The shipped configs the tests shrink and run, in one table: the
``tiny_cfg`` fixture (``tests/conftest.py``) builds them in-process and
``write_tiny_config`` (``tests/test_tools/tools_support.py``) writes them to
disk for the tools. Both shrink them here. ``write_tiny`` shrinks a stock
mmdet / mmseg config and writes it to disk (the ``pair_files`` fixture and
the pair suggester's tests).

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


# ------------------------------------------------ stock configs on disk
#: stock mmdet / mmseg configs the pair suggester is tested on
RETINANET_R18 = 'mmdet::retinanet/retinanet_r18_fpn_1x_coco.py'
RETINANET_R50 = 'mmdet::retinanet/retinanet_r50_fpn_1x_coco.py'
FASTER_R50 = 'mmdet::faster_rcnn/faster-rcnn_r50_fpn_2x_coco.py'
CASCADE_X101 = \
    'mmdet::cascade_rcnn/cascade-mask-rcnn_x101-64x4d_fpn_20e_coco.py'
PSPNET_R18 = 'mmseg::pspnet/pspnet_r18-d8_4xb2-80k_cityscapes-512x1024.py'
PSPNET_R101 = 'mmseg::pspnet/pspnet_r101-d8_4xb2-80k_cityscapes-512x1024.py'
DEEPLABV3_R18 = \
    'mmseg::deeplabv3/deeplabv3_r18-d8_4xb2-80k_cityscapes-512x1024.py'
PSPNET_MV2 = ('mmseg::mobilenet_v2/'
              'mobilenet-v2-d8_pspnet_4xb2-80k_cityscapes-512x1024.py')
#: 128 x 128 crops: a 16 x 16 last stage, which TaT's 16 x 16 grid divides
SEG_SIZE = (128, 128)


def write_tiny(stock: str, kind: str, width: int, path: str,
               data_root: str, work_dir: str) -> str:
    """Shrink a stock config (model and runtime) and dump it to ``path``."""
    from mmdistill.testing import tiny_detection, tiny_model, tiny_segmentation
    from mmdistill.utils.config import load_config
    cfg = load_config(stock)
    extra = dict(fpn_channels=2 * width) if kind == 'det' else dict(
        crop=SEG_SIZE)
    cfg.model = tiny_model(cfg.model, kind, width=width, **extra)
    if kind == 'det':
        tiny_detection(cfg, work_dir, data_root)
        # an untrained detector keeps no box above 0.05: keep some
        test_cfg = cfg.model.test_cfg
        for stage in [test_cfg] + [v for v in test_cfg.values()
                                   if isinstance(v, dict)]:
            if 'score_thr' in stage:
                stage.score_thr = 0.0
                stage.max_per_img = 20
    else:
        tiny_segmentation(cfg, work_dir, data_root, size=SEG_SIZE)
    cfg.dump(path)
    return path
