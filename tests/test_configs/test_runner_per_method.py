"""One 2-iteration run of the real mmengine Runner per method family, on the
shipped config with its models shrunk by ``mmdistill.testing`` and generated
data in the stock COCO / Cityscapes / ImageNet layouts (issue 3): every
``loss_distill_<pair>`` is finite in both iterations and the student's
weights change."""
import os.path as osp

import pytest
import torch
from mmengine.config import Config
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper
from mmengine.runner import Runner

from mmdistill.testing import (random_checkpoint, teacher_overrides,
                               tiny_detection, tiny_model, tiny_segmentation)
from mmdistill.testing.tiny import tiny_classification
from mmdistill.utils.config import load_config

pytestmark = pytest.mark.slow

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
FAMILIES = {
    'fgd_retinanet':
    'configs/fgd/fgd_fpn_retinanet-x101_retinanet-r50_2x_coco.py',
    'mgd_retinanet':
    'configs/mgd/mgd_fpn_retinanet-x101_retinanet-r50_2x_coco.py',
    'tat_pspnet':
    'configs/tat/tat_backbone_pspnet-r101_pspnet-r18_80k_cityscapes-'
    '512x1024.py',
    'lad_pspnet':
    'configs/angular/lad_backbone_pspnet-r101_pspnet-r18_80k_cityscapes-'
    '512x1024.py',
    'cwd_deeplabv3_logits':
    'configs/cwd/cwd_logits_pspnet-r101_deeplabv3-r18_80k_cityscapes-'
    '512x1024.py',
    'vit_attention_deit':
    'configs/vit_attention/vit-attention_last-block_deit-small_deit-tiny_'
    '300e_in1k.py',
}
# shrunken widths: FPN outputs of both detectors, last ResNet stage of the
# segmentation student (width 8) and teacher (width 16)
FPN_CHANNELS = 16
STAGE4 = dict(student=64, teacher=128)
# 128 x 128 crops: a 16 x 16 last stage, which TaT's 16 x 16 patch grid
# divides (as it divides the 64 x 128 map of the configs' 512 x 1024 crops)
SEG_SIZE = (128, 128)
# ViT classifiers: 32 x 32 crops (2 x 2 patches of 16); 8 (student) and 16
# (teacher) channels per head, the heads and 12 layers of the real models
CLS_SIZE = 32


def kind_of(family: str) -> str:
    if 'retinanet' in family:
        return 'det'
    return 'cls' if 'deit' in family else 'seg'


def fit_channels(distill: dict, backbone=None) -> None:
    """Give the connectors and FGD losses of ``distill`` the shrunken
    models' channels (logit taps keep the 19 classes); ``backbone`` is the
    (student, teacher) width of backbone taps, by default the last ResNet
    stage of the shrunken segmentors."""
    backbone = backbone or (STAGE4['student'], STAGE4['teacher'])
    for spec in distill.values():
        student_tap = str(spec['student'])
        if student_tap.startswith('neck'):
            channels = (FPN_CHANNELS, FPN_CHANNELS)
        elif student_tap.startswith('backbone'):
            channels = tuple(backbone)
        else:
            continue
        connector = spec.get('connector')
        if connector is not None:
            connector.in_channels, connector.out_channels = channels
        if spec['loss']['type'] == 'FGDLoss':
            spec['loss']['in_channels'] = channels[1]


class Record(Hook):
    """Keeps the student's weights after initialisation and the outputs
    (log variables) of every training iteration."""

    def __init__(self):
        self.initial = None
        self.outputs = []

    @staticmethod
    def _distiller(runner):
        model = runner.model
        return model.module if is_model_wrapper(model) else model

    def before_train(self, runner):
        distiller = self._distiller(runner)
        self.initial = {
            k: v.detach().clone()
            for k, v in distiller.student.state_dict().items()
        }
        self.teacher = {
            k: v.detach().clone()
            for k, v in distiller.teacher.state_dict().items()
        }

    def after_train_iter(self, runner, batch_idx, data_batch=None,
                         outputs=None):
        self.outputs.append(
            {k: torch.as_tensor(v).detach().clone()
             for k, v in outputs.items()})


def shrunken(config: str, kind: str, tmp_path, data_root: str) -> Config:
    cfg = Config.fromfile(osp.join(ROOT, config))
    extra = dict(det=dict(fpn_channels=FPN_CHANNELS), seg=dict(crop=SEG_SIZE),
                 cls=dict(size=CLS_SIZE))[kind]
    cfg.model.student = tiny_model(cfg.model.student, kind, width=8, **extra)
    teacher_cfg = load_config(cfg.model.teacher.config)
    teacher = tiny_model(teacher_cfg.model, kind, width=16, **extra)
    widths = None
    if kind == 'cls':  # ViT embedding widths
        widths = (cfg.model.student.backbone.arch['embed_dims'],
                  teacher['backbone']['arch']['embed_dims'])
    fit_channels(cfg.model.distill, widths)
    cfg.model.teacher.checkpoint = random_checkpoint(
        teacher, str(tmp_path / 'teacher.pth'),
        scope=teacher_cfg.default_scope)
    cfg.model.teacher.cfg_options = teacher_overrides(teacher)
    work_dir = str(tmp_path / 'work')
    if kind == 'det':
        # 4 training images, batch 2: one epoch is 2 iterations
        tiny_detection(cfg, work_dir, data_root, epochs=1)
    elif kind == 'cls':
        tiny_classification(cfg, work_dir, data_root, size=CLS_SIZE, epochs=1)
    else:
        tiny_segmentation(cfg, work_dir, data_root, size=SEG_SIZE, iters=2)
    return cfg


@pytest.mark.parametrize('family', sorted(FAMILIES))
def test_two_iterations_in_the_runner(family, tmp_path, request,
                                      distill_keys):
    config = FAMILIES[family]
    kind = kind_of(family)
    if kind == 'cls':
        pytest.importorskip(
            'mmpretrain.models',
            reason='mmpretrain.models cannot be imported (torchvision is '
            'missing or unusable here)')
    data_root = request.getfixturevalue(
        dict(det='coco_root', seg='cityscapes_root',
             cls='imagenet_root')[kind])
    cfg = shrunken(config, kind, tmp_path, data_root)
    record = Record()
    runner = Runner.from_cfg(cfg)
    runner.register_hook(record, priority='LOWEST')
    runner.train()

    assert runner.iter == 2 and len(record.outputs) == 2
    keys = distill_keys(cfg.model.distill)
    for outputs in record.outputs:
        missing = [k for k in keys if k not in outputs]
        assert not missing, f'{missing} not in {sorted(outputs)}'
        for key in keys:
            assert torch.isfinite(outputs[key]), (key, outputs[key])
        assert torch.isfinite(outputs['loss'])
    assert any(record.outputs[i][k] > 0 for i in range(2) for k in keys)

    distiller = Record._distiller(runner)
    final = distiller.student.state_dict()
    changed = [k for k, v in record.initial.items()
               if v.is_floating_point() and not torch.equal(v, final[k])]
    assert changed, 'no student weight changed in two iterations'
    assert any(k.startswith('backbone.') for k in changed), changed
    # the teacher stayed as loaded
    for k, v in distiller.teacher.state_dict().items():
        assert torch.equal(v, record.teacher[k]), k

    inherit = cfg.model.get('init_student_from_teacher')
    if inherit:
        # FGD/MGD inheriting: after init, the student's FPN output convs
        # (same shape in both shrunken models) are the teacher's
        key = 'neck.fpn_convs.0.conv.weight'
        assert torch.equal(record.initial[key], record.teacher[key])
