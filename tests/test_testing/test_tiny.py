"""mmdistill.testing's shrinking of model configs (used by the tests, the
demo and the tools' --random-teacher paths)."""
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
