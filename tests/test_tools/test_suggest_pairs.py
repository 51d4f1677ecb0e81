"""tools/analysis/suggest_pairs.py: candidate taps from one dummy forward,
pairs matched by stride with the shipped configs' settings, and the written
config, which builds and trains in the mmengine Runner.

The models are real mmdet/mmseg configs shrunk by ``mmdistill.testing``
(student width 8, teacher width 16: their channels differ, so the channels
the tool fills in are checked by the distiller's own build-time check and
by training), dumped to config files the tool reads; the teacher gets a
random checkpoint."""
import importlib.util
import os.path as osp

import pytest
import torch
from mmengine.config import Config
from mmengine.hooks import Hook
from mmengine.runner import Runner

from mmdistill.analysis import SuggestError, probe_model, suggest
from mmdistill.analysis.suggest import (VARIANTS, brace, classify,
                                        configs_root, format_value,
                                        load_settings)
from mmdistill.testing import (tiny_detection, tiny_model, tiny_segmentation,
                               use_random_teacher)
from mmdistill.utils.config import load_config

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
TOOL = osp.join(ROOT, 'tools', 'analysis', 'suggest_pairs.py')

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
# 128 x 128 crops: a 16 x 16 last stage, which TaT's 16 x 16 grid divides
SEG_SIZE = (128, 128)


def load_tool():
    spec = importlib.util.spec_from_file_location('suggest_pairs', TOOL)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def write_tiny(stock: str, kind: str, width: int, path: str,
               data_root: str, work_dir: str) -> str:
    """Shrink a stock config (model and runtime) and dump it to ``path``."""
    cfg = load_config(stock)
    extra = dict(fpn_channels=2 * width) if kind == 'det' else dict(
        crop=SEG_SIZE)
    cfg.model = tiny_model(cfg.model, kind, width=width, **extra)
    aux = cfg.model.get('auxiliary_head')
    if cfg.model.backbone.type == 'MobileNetV2' and aux:
        # shrink_segmentor gives MobileNetV2's auxiliary head (in_index 2:
        # layer5, 96 x 0.25 channels) 8 input channels
        aux.in_channels = 24
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


@pytest.fixture
def pair_files(tmp_path, request):
    """``pair_files(student, teacher, kind)``: the shrunken student (width 8)
    and teacher (width 16) configs on disk."""

    def make(student, teacher, kind, teacher_width=16):
        root = request.getfixturevalue(
            'coco_root' if kind == 'det' else 'cityscapes_root')
        work = str(tmp_path / 'work')
        return (write_tiny(student, kind, 8, str(tmp_path / 'student.py'),
                           root, work),
                write_tiny(teacher, kind, teacher_width,
                           str(tmp_path / 'teacher.py'), root, work))

    return make


# ------------------------------------------------------------- pure parts
def test_brace_syntax():
    assert brace(['neck.fpn_convs.0.conv', 'neck.fpn_convs.1.conv',
                  'neck.fpn_convs.2.conv']) == 'neck.fpn_convs.{0-2}.conv'
    assert brace(['neck[0]', 'neck[2]', 'neck[4]']) == 'neck[{0,2,4}]'
    assert brace(['backbone.layer4']) == 'backbone.layer4'
    # differing in two places, or in text: no single brace group
    assert brace(['a.0.b.1', 'a.1.b.2']) is None
    assert brace(['neck.fpn_convs.0.conv', 'neck[4]']) is None


def test_written_values_read_back():
    value = dict(
        _delete_=True, type='X', taps=['neck[{0-4}]', dict(path='a', call=2)],
        loss=dict(type='FGDLoss', alpha=1e-3, beta=5e-4, gamma=5e-4,
                  lambda_=5e-6, tau=0.5, in_channels=256),
        grid=(16, 16), one=(1, ), flag=None,
        opts={'model.test_cfg.mode': 'whole'})
    text = format_value(value, 0, len('x = '))
    assert max(len(line) for line in text.splitlines()) <= 79
    assert eval(text) == value  # noqa: S307 (our own literal text)


@pytest.mark.slow
def test_shipped_configs_are_classified_by_content():
    """Every shipped feature config of the seven methods is recognised
    (method and variant) from its content, so file renames do not matter,
    and each method has a setting for the detector / segmentor variants
    the tool supports."""
    import glob
    found = {}
    for path in sorted(glob.glob(osp.join(configs_root(), '*', '*.py'))):
        label = classify(path)
        if label:
            found.setdefault(label, []).append(path)
    expected = {('mlp', 'det-one'), ('mlp', 'det-two'), ('mlp', 'seg-homo'),
                ('mlp', 'seg-hetero'), ('fgd', 'det-one'),
                ('fgd', 'det-two'), ('mgd', 'det-one'), ('cwd', 'det-one'),
                ('cwd', 'det-two'), ('cwd', 'seg-homo'),
                ('cwd', 'seg-hetero'), ('lad', 'seg-homo'),
                ('lad', 'seg-hetero'), ('cad', 'seg-homo'),
                ('cad', 'seg-hetero'), ('tat', 'seg-homo')}
    assert expected <= set(found), expected - set(found)
    # the weights come from the files, e.g. the MLP-connector paper's two
    # detector alphas (one-stage, two-stage)
    one = load_settings('mlp', 'det-one')
    two = load_settings('mlp', 'det-two')
    assert one.pairs['fpn']['loss']['loss_weight'] == 2e-5
    assert two.pairs['fpn']['loss']['loss_weight'] == 5e-7
    fgd = load_settings('fgd', 'det-one')
    assert fgd.inherit == ['neck', 'bbox_head']
    assert fgd.optim_wrapper == dict(clip_grad=dict(max_norm=35,
                                                    norm_type=2))
    for method in ('fgd', 'tat'):
        for variant in VARIANTS:
            if (method == 'fgd') == variant.startswith('det'):
                assert load_settings(method, variant).pairs


# ------------------------------------------------------ probing (tiny)
def test_candidates_of_a_two_stage_detector(pair_files):
    student, teacher = pair_files(FASTER_R50, CASCADE_X101, 'det')
    probe = probe_model(Config.fromfile(student), student)
    levels = probe.by_role('level')
    assert [c.stride for c in levels] == [4, 8, 16, 32, 64]
    assert [c.tap() for c in levels[:4]] == [
        f'neck.fpn_convs.{i}.conv' for i in range(4)]
    # FPN max-pools its 5th level: no module, tapped by index
    assert levels[4].by_index and levels[4].tap() == 'neck[4]'
    assert all(c.channels == 16 for c in levels)
    stages = {c.path: c for c in probe.by_role('stage')}
    assert [stages[f'backbone.layer{i}'].stride for i in (1, 2, 3, 4)] == \
        [4, 8, 16, 32]
    assert stages['backbone.layer4'].index == 3
    heads = {c.path: c for c in probe.by_role('head')}
    assert heads['rpn_head.rpn_cls'].calls == [0, 1, 2, 3, 4]
    assert 'roi_head.bbox_head.fc_cls' in heads

    suggestion = suggest(probe, probe_model(Config.fromfile(teacher),
                                            teacher), 'fgd')
    assert suggestion.variant == 'det-two'
    fpn = suggestion.distill['fpn']
    # the 4 levels with their own conv (FGD's two-stage setting)
    assert fpn['student'] == fpn['teacher'] == 'neck.fpn_convs.{0-3}.conv'
    assert fpn['loss']['in_channels'] == 32
    assert fpn['loss']['student_channels'] == 16
    assert fpn['loss']['alpha'] == 5e-5 and fpn['loss']['lambda_'] == 5e-7
    assert suggestion.inherit == []


@pytest.mark.parametrize('teacher_width', [8, 16])
def test_inheriting_only_when_the_teacher_fits(pair_files, teacher_width):
    """MGD RetinaNet (one-stage): the shipped config starts the student
    from the teacher's neck and head, copying what fits (all of it at the
    same width), left out with a note when nothing fits."""
    student, teacher = pair_files(RETINANET_R18, RETINANET_R50, 'det',
                                  teacher_width=teacher_width)
    suggestion = suggest(probe_model(Config.fromfile(student), student),
                         probe_model(Config.fromfile(teacher), teacher),
                         'mgd')
    fpn = suggestion.distill['fpn']
    assert fpn['connector'] == dict(
        type='MGDConnector', in_channels=16, out_channels=2 * teacher_width,
        mask_ratio=0.65)
    assert fpn['loss'] == dict(type='MGDLoss', alpha=2e-5)
    assert suggestion.settings.optim_wrapper['clip_grad']['max_norm'] == 35
    if teacher_width == 8:
        assert suggestion.inherit == ['neck', 'bbox_head']
        assert not any('init_student' in n for n in suggestion.notes)
    else:
        # 16 vs 32 channels everywhere in the neck and head
        assert suggestion.inherit == []
        assert any('inheriting strategy' in n and 'is left out' in n
                   for n in suggestion.notes)


def test_unsupported_methods_say_what_to_use(pair_files):
    student, teacher = pair_files(PSPNET_R18, PSPNET_R101, 'seg')
    s = probe_model(Config.fromfile(student), student)
    t = probe_model(Config.fromfile(teacher), teacher)
    assert [c.path for c in s.by_role('head')] == ['decode_head.conv_seg']
    with pytest.raises(SuggestError, match='FGD needs ground-truth boxes'):
        suggest(s, t, 'fgd')


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
        backbone=dict(student='backbone.layer4', teacher='backbone.layer4',
                      connector=dict(type='ConvConnector', in_channels=64,
                                     out_channels=128, kernel_size=1,
                                     num_convs=1,
                                     norm_cfg=dict(type='SyncBN'),
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
        backbone=dict(student='backbone.layer7', teacher='backbone.layer4',
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
    hooks = [h['type'] for h in cfg.custom_hooks]
    assert hooks == ['mmdistill.StudentCheckpointHook',
                     'mmdistill.RNGStateHook', 'mmdistill.TeacherCheckHook']

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
