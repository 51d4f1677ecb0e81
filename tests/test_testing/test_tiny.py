"""mmdistill.testing's shrinking of model configs (used by the tests, the
demo and the tools' --random-teacher paths)."""
import os.path as osp

from mmengine.registry import MODELS, DefaultScope

from mmdistill.testing import tiny_model
from mmdistill.utils.config import load_config


def test_a_deformable_resnext_teacher_shrinks_to_a_model_that_builds():
    """The FGD cascade config's teacher (ResNeXt-101 with DCN in stages
    3-5) becomes a ResNet-18, whose basic blocks take no DCN."""
    model = tiny_model(
        load_config('mmdet::dcn/cascade-mask-rcnn_x101-32x4d-dconv-c3-c5_'
                    'fpn_1x_coco.py').model, 'det', width=16,
        fpn_channels=16)
    assert 'dcn' not in model.backbone
    with DefaultScope.overwrite_default_scope('mmdet'):
        built = MODELS.build(model)
    assert built.backbone.depth == 18


def test_a_mobilenet_v2_student_gets_its_connector_channels(tmp_path):
    """The last MobileNet-V2 stage keeps 320 x 0.25 = 80 channels; the
    connector was given the ResNet-18's 64, and the distiller stopped at
    its build."""
    from mmengine.config import Config

    from mmdistill.testing import random_checkpoint, shrink_distiller
    root = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
    cfg = Config.fromfile(
        f'{root}/configs/angular/lad_backbone_pspnet-r101_pspnet-mv2_80k_'
        'cityscapes-512x1024.py')
    teacher, scope = shrink_distiller(cfg, 'seg')
    connector = cfg.model.distill.backbone.connector
    assert (connector.in_channels, connector.out_channels) == (80, 128)
    cfg.model.teacher.checkpoint = random_checkpoint(
        teacher, str(tmp_path / 'teacher.pth'), scope=scope)
    cfg.model.teacher.cfg_options = dict(model=dict(teacher, _delete_=True))
    with DefaultScope.overwrite_default_scope('mmseg'):
        MODELS.build(cfg.model)  # the channels fit the taps
