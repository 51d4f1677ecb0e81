"""mmdistill.analysis: candidate taps from one dummy forward (probe) and
pairs matched by stride with the shipped configs' settings (suggest).

The models are real mmdet/mmseg configs shrunk by ``mmdistill.testing``
(student width 8, teacher width 16), written to disk by the ``pair_files``
fixture; the command line tool and the configs it writes are tested in
``tests/test_tools/test_suggest_pairs.py``."""
import os.path as osp
import re

import pytest
from mmengine.config import Config
from tiny_configs import (CASCADE_X101, FASTER_R50, PSPNET_R18, PSPNET_R101,
                          RETINANET_R18, RETINANET_R50)

from mmdistill.analysis import SuggestError, probe_model, suggest
from mmdistill.analysis.suggest import (VARIANTS, brace, classify,
                                        configs_root, format_value,
                                        load_settings)


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
    """Every shipped config of the ten methods is recognised (method and
    variant) from its content, so file renames do not matter, and each
    method has a setting for the detector / segmentor / classifier variants
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
                ('cad', 'seg-hetero'), ('tat', 'seg-homo'), ('kd', 'cls'),
                ('dkd', 'cls'), ('dist', 'cls')}
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
        for variant in VARIANTS[:-1]:  # not 'cls'
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
    assert fpn['loss'] == dict(type='MGDLoss', loss_weight=2e-5)
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


def test_classifiers_get_their_logit_layers_paired():
    """Two mmpretrain classifiers (a ResNet student, a DeiT teacher):
    --method kd pairs each model's own last linear layer with the shipped
    KD setting; a method of detectors and segmentors names the logit
    methods; a logit method on segmentors names CWD."""
    from mmdistill.utils.config import load_config
    student = 'mmpretrain::resnet/resnet18_8xb32_in1k.py'
    teacher = 'mmpretrain::deit/deit-tiny_4xb256_in1k.py'
    s = probe_model(load_config(student), student, (64, 64))
    t = probe_model(load_config(teacher), teacher, (224, 224))
    found = suggest(s, t, 'kd')
    assert found.distill == dict(logits=dict(
        student='head.fc', teacher='head.layers.head',
        loss=dict(type='KDLoss', tau=1.0, loss_weight=0.5)))
    assert found.settings.student == dict(head=dict(loss=dict(
        loss_weight=0.5)))
    assert found.settings.source.startswith('configs/kd/')
    dkd = suggest(s, t, 'dkd')
    assert dkd.distill['logits']['loss']['type'] == 'DKDLoss'
    assert dkd.settings.student is None
    assert suggest(s, t, 'dist').distill['logits']['loss']['type'] == \
        'DISTLoss'
    with pytest.raises(SuggestError, match='--method kd, dkd or dist'):
        suggest(s, t, 'mlp')
    # a head that averages its class and distillation branches: the class
    # branch, which the probe does not list as an output
    teacher = 'mmpretrain::deit/deit-tiny-distilled_4xb256_in1k.py'
    t = probe_model(load_config(teacher), teacher, (224, 224))
    assert suggest(s, t, 'kd').distill['logits']['teacher'] == \
        'head.layers.head'


def test_student_changes_are_written_only_where_the_student_has_the_part():
    from mmdistill.analysis.suggest import _fitting
    kd = dict(head=dict(loss=dict(loss_weight=0.5)))
    assert _fitting(kd, dict(head=dict(type='H', loss=dict(type='CE')))) \
        == (kd, {})
    assert _fitting(kd, dict(head=dict(type='H'))) == ({}, kd)


def test_the_logit_layer_is_not_a_distillation_token_branch():
    """Heads with a distillation-token branch (DeiT's ``head_dist``,
    EfficientFormer's ``dist_head``, LeViT's ``head_dist``): the class
    branch is named."""
    from types import SimpleNamespace

    import torch.nn as nn
    from mmpretrain.models.heads import (DeiTClsHead, EfficientFormerClsHead,
                                         LeViTClsHead)

    from mmengine.registry import DefaultScope

    from mmdistill.analysis.suggest import classifier_layer
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        heads = ((EfficientFormerClsHead(10, 8), 'head.head'),
                 (DeiTClsHead(10, 8), 'head.layers.head'),
                 (LeViTClsHead(num_classes=10, in_channels=8),
                  'head.head.linear'))
    for head, expected in heads:
        model = nn.Module()
        model.head = head
        assert classifier_layer(SimpleNamespace(model=model)) == expected


@pytest.mark.parametrize('stock, method, variant, noted', [
    ('mmdet::rtmdet/rtmdet_tiny_8xb32-300e_coco.py', 'fgd', 'det-one', True),
    ('mmdet::retinanet/retinanet_r18_fpn_1x_coco.py', 'fgd', 'det-one',
     False),
    ('mmseg::upernet/upernet_r18_4xb2-40k_cityscapes-512x1024.py', 'cwd',
     'seg-hetero', False),
    # MGD for two-stage detectors: yzd-v's own weights replace those of the
    # RetinaNet config the settings are read from, so there is nothing to
    # compare with
    ('mmdet::mask_rcnn/mask-rcnn_r50_fpn_1x_coco.py', 'mgd', 'det-two',
     False),
])
def test_loss_weights_for_a_student_of_other_losses_are_flagged(
        stock, method, variant, noted):
    """FGD's weights are set against RetinaNet's FocalLoss + L1Loss: an
    RTMDet student (QualityFocalLoss + GIoULoss) is told to check the scale
    or measure the weight; a RetinaNet R18 or an UPerNet (the shipped
    students' CrossEntropyLoss) is not."""
    from mmdistill.analysis.probe import Probe, profile_of
    from mmdistill.analysis.suggest import loss_scale_note
    from mmdistill.utils.config import load_config
    cfg = load_config(stock)
    student = Probe(config=stock, kind=variant[:3], model_type=cfg.model.type,
                    input_shape=(1, 3, 64, 64), candidates=[],
                    components={}, profile=profile_of(cfg))
    settings = load_settings(method, variant)
    note = loss_scale_note(settings, student)
    if not noted:
        assert note is None
        return
    assert note == (
        f'the loss weights are those of {settings.source}, set against its '
        "student's own losses (FocalLoss, L1Loss); this student trains with "
        'GIoULoss, QualityFocalLoss, of another scale, so the distillation '
        "may be too strong or too weak: compare the logged loss_distill_* "
        "with the student's losses over the first iterations, or give the "
        "pairs loss_weight='auto' with "
        "dict(type='mmdistill.AutoLossWeightHook') in custom_hooks, which "
        'measures the weight on the run')


def test_stages_in_a_list_are_listed_and_pooled_outputs_named():
    """ConvNeXt keeps its stages in a ModuleList (never called itself) and
    pools before its last norm: the four stages are listed, the pooled 1x1
    norm output is not a "stage", and the backbone's vector is named as
    one (it was listed as a "backbone stage", and the stages were not)."""
    from mmdistill.analysis.suggest import format_candidates
    from mmdistill.utils.config import load_config
    config = 'mmpretrain::convnext/convnext-tiny_32xb128_in1k.py'
    cfg = load_config(config)
    cfg.model.backbone.arch = dict(depths=[1, 1, 1, 1],
                                   channels=[8, 16, 24, 32])
    cfg.model.head.in_channels = 32
    probe = probe_model(cfg, config, (64, 64))
    stages = [(c.path, c.stride) for c in probe.candidates
              if c.role == 'stage' and c.spatial]
    assert stages == [(f'backbone.stages.{i}', 4 * 2 ** i)
                      for i in range(4)]
    table = format_candidates(probe, 'student')
    assert 'norm3' not in table
    assert re.search(r'backbone\[0\] +1x32 +- +32 +backbone output, a '
                     r'vector per image', table), table
