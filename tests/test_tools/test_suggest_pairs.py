"""tools/analysis/suggest_pairs.py: candidate taps from one dummy forward,
pairs matched by stride with the shipped configs' settings, and the written
config, which builds and trains in the mmengine Runner.

The models are real mmdet/mmseg configs shrunk by ``mmdistill.testing``
(student width 8, teacher width 16: their channels differ, so the channels
the tool fills in are checked by the distiller's own build-time check and
by training), dumped to config files the tool reads; the teacher gets a
random checkpoint."""
import os.path as osp

import pytest
import torch
from mmengine.config import Config
from mmengine.hooks import Hook
from mmengine.runner import Runner

from tiny_configs import (CASCADE_X101, DEEPLABV3_R18, FASTER_R50,
                          PSPNET_MV2, PSPNET_R18, PSPNET_R101, RETINANET_R18,
                          RETINANET_R50)

from mmdistill.testing import use_random_teacher

from tools_support import load_script

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
TOOL = osp.join(ROOT, 'tools', 'analysis', 'suggest_pairs.py')


def load_tool():
    return load_script(TOOL, 'suggest_pairs')


def test_filled_in_checkpoint_is_required(pair_files, tmp_path):
    """The written config names the teacher config and a FILL ME
    checkpoint; building it stops on that checkpoint."""
    student, teacher = pair_files(RETINANET_R18, RETINANET_R50, 'det')
    out = str(tmp_path / 'distill.py')
    result = load_tool().main(
        [student, teacher, '--method', 'cwd', '--out', out])
    assert result['out'] == out
    cfg = Config.fromfile(out)
    assert cfg.model.teacher.checkpoint.startswith('FILL ME')
    assert cfg.model.distill.fpn.student == 'neck[{0-4}]'
    # 16 student vs 32 teacher FPN channels: CWD gets a 1x1 alignment
    assert cfg.model.distill.fpn.connector == dict(
        type='ConvConnector', kernel_size=1, num_convs=1, in_channels=16,
        out_channels=32)
    with pytest.raises(ValueError, match='still the placeholder'):
        Runner.from_cfg(cfg)
    with pytest.raises(FileExistsError, match='--force'):
        load_tool().main([student, teacher, '--method', 'cwd', '--out',
                          out])


def test_json_output(pair_files, capsys):
    import json
    student, teacher = pair_files(PSPNET_R18, PSPNET_R101, 'seg')
    load_tool().main([student, teacher, '--method', 'cwd', '--json'])
    printed = json.loads(capsys.readouterr().out)
    assert printed['method'] == 'cwd' and printed['variant'] == 'seg-homo'
    assert [p['student_tap'] for p in printed['pairs']] == [
        'decode_head.conv_seg']
    assert printed['distill']['logits']['loss'] == dict(
        type='ChannelWiseDivergence', tau=1.0, loss_weight=5)
    assert "student={{_base_.model}}" in printed['config']
    stages = [c for c in printed['student']['candidates']
              if c['role'] == 'stage']
    assert stages[-1]['tap'] == 'backbone.layer4'
    assert stages[-1]['stride'] == 8 and stages[-1]['channels'] == 64


# ------------------------------------------- written configs train
CASES = {
    'retinanet_mlp': (RETINANET_R18, RETINANET_R50, 'det', 'mlp'),
    'faster_rcnn_fgd': (FASTER_R50, CASCADE_X101, 'det', 'fgd'),
    'pspnet_tat': (PSPNET_R18, PSPNET_R101, 'seg', 'tat'),
    'deeplabv3_lad': (DEEPLABV3_R18, PSPNET_R101, 'seg', 'lad'),
    'mobilenetv2_mlp': (PSPNET_MV2, PSPNET_R101, 'seg', 'mlp'),
}
EXPECTED = {
    'retinanet_mlp': dict(
        fpn=dict(student='neck.fpn_convs.{0-4}.conv',
                 teacher='neck.fpn_convs.{0-4}.conv',
                 connector=dict(type='MLPConnector', in_channels=16,
                                out_channels=32),
                 loss=dict(type='L2Loss', loss_weight=2e-5))),
    'faster_rcnn_fgd': dict(
        fpn=dict(student='neck.fpn_convs.{0-3}.conv',
                 teacher='neck.fpn_convs.{0-3}.conv',
                 loss=dict(type='FGDLoss', in_channels=32, tau=0.5,
                           alpha=5e-5, beta=2.5e-5, gamma=5e-5,
                           lambda_=5e-7, student_channels=16))),
    'deeplabv3_lad': dict(
        stage=dict(student='backbone.layer4', teacher='backbone.layer4',
                   connector=dict(type='ConvConnector', in_channels=64,
                                  out_channels=128, kernel_size=1,
                                  num_convs=1, norm_cfg=dict(type='SyncBN'),
                                  last_norm_act=True),
                   loss=dict(type='AngularLoss', mode='layer',
                             loss_weight=10)),
        logits=dict(student='decode_head.conv_seg',
                    teacher='decode_head.conv_seg',
                    loss=dict(type='PixelKLDivergence', tau=1.0,
                              loss_weight=10))),
    # MobileNetV2 (widen 0.25): its last stage layer7 (80 channels) at the
    # teacher's stride 8; homogeneous (both PSPHead): alpha 2e-5
    'mobilenetv2_mlp': dict(
        stage=dict(student='backbone.layer7', teacher='backbone.layer4',
                   connector=dict(type='MLPConnector', in_channels=80,
                                  out_channels=128),
                   loss=dict(type='L2Loss', loss_weight=2e-5))),
}


@pytest.mark.slow
@pytest.mark.parametrize('case', sorted(CASES))
def test_written_config_trains(case, pair_files, tmp_path):
    student, teacher, kind, method = CASES[case]
    student, teacher = pair_files(student, teacher, kind)
    out = str(tmp_path / 'configs' / f'{case}.py')
    result = load_tool().main(
        [student, teacher, '--method', method, '--out', out] +
        (['--size', '128', '128'] if kind == 'seg' else []))
    assert 'error' not in result, result.get('error')
    cfg = Config.fromfile(out)
    # _base_ and teacher config relative to the written file
    assert osp.normpath(cfg.model.teacher.config) == teacher
    assert cfg.model.type == 'mmdistill.SingleTeacherDistiller'
    distill = cfg.model.distill.to_dict()
    if case in EXPECTED:
        assert distill == EXPECTED[case]
    if case == 'pspnet_tat':
        assert set(distill) == {'patch_group', 'anchor'}
        for pair in distill.values():
            assert pair['student'] == pair['teacher'] == 'backbone.layer4'
            assert (pair['connector']['in_channels'],
                    pair['connector']['out_channels']) == (64, 128)
        assert distill['patch_group']['loss']['loss_weight'] == 0.1
    # mmdistill's hooks merged into the student's default_hooks, its own
    # custom_hooks kept in front of TeacherCheckHook
    assert cfg.default_hooks.student_checkpoint.type == \
        'mmdistill.StudentCheckpointHook'
    assert cfg.default_hooks.rng_state.type == 'mmdistill.RNGStateHook'
    assert 'checkpoint' in cfg.default_hooks
    hooks = [h['type'] for h in cfg.custom_hooks]
    assert hooks == ['mmdistill.TeacherCheckHook']

    # train it: a random teacher (which TeacherCheckHook would rightly stop)
    cfg.custom_hooks = [h for h in cfg.custom_hooks
                        if h['type'] != 'mmdistill.TeacherCheckHook']
    use_random_teacher(cfg, str(tmp_path / 'teacher.pth'))
    cfg.work_dir = str(tmp_path / 'work')
    cfg.visualizer.name = f'suggest_{case}'
    runner = Runner.from_cfg(cfg)
    losses = []
    runner.register_hook(_Losses(losses), priority='LOWEST')
    runner.train()
    assert runner.iter == 2
    names = [k for k in losses[0] if k.startswith('loss_distill_')]
    count = sum(
        len(_expand(spec['student'])) for spec in distill.values())
    assert len(names) == count, names
    for step in losses:
        for name in names:
            assert torch.isfinite(step[name]), (name, step[name])


def _expand(tap):
    from mmdistill.distillers.taps import expand_braces
    return expand_braces(tap)


class _Losses(Hook):
    """Keeps each iteration's outputs."""

    def __init__(self, store):
        self.store = store

    def after_train_iter(self, runner, batch_idx, data_batch=None,
                         outputs=None):
        self.store.append({k: torch.as_tensor(v).detach().clone()
                           for k, v in outputs.items()})


@pytest.mark.slow
def test_full_size_retinanet_report(tmp_path, capsys):
    """The stock RetinaNet R50 -> R18 pair at full size (random weights,
    nothing downloaded): the printed candidates and the proposal."""
    out = str(tmp_path / 'mlp.py')
    result = load_tool().main([RETINANET_R18, RETINANET_R50, '--method',
                               'mlp', '--out', out])
    printed = capsys.readouterr().out
    assert 'neck.fpn_convs.4.conv  = neck[4]' in printed
    assert 'backbone.layer4  = backbone[3]' in printed
    assert 'bbox_head.retina_cls (calls 0-4)' in printed
    student = {c['tap']: c for c in result['student']['candidates']}
    teacher = {c['tap']: c for c in result['teacher']['candidates']}
    assert student['backbone.layer4']['channels'] == 512
    assert teacher['backbone.layer4']['channels'] == 2048
    assert [student[f'neck.fpn_convs.{i}.conv']['stride']
            for i in range(5)] == [8, 16, 32, 64, 128]
    cfg = Config.fromfile(out)
    assert cfg.model.distill.fpn.to_dict() == dict(
        student='neck.fpn_convs.{0-4}.conv',
        teacher='neck.fpn_convs.{0-4}.conv',
        connector=dict(type='MLPConnector', in_channels=256,
                       out_channels=256),
        loss=dict(type='L2Loss', loss_weight=2e-5))
    assert cfg.model.teacher.config == RETINANET_R50
