"""tools/analysis/suggest_pairs.py and the parts of mmdistill.analysis it
uses, on shrunken real mmseg / mmdet configs (the ``pair_files`` fixture:
student width 8, teacher width 16) and on the stock configs' settings
(nothing is built at full size here).

Covers: overrides written into the config, pair-level settings of the
shipped config, distillation configs given as a model config, a student
stage shallower than its last one, the preprocessing warning, the cited
shipped config, TaT's patch-grid note, one-line errors, and head outputs
of Cascade R-CNN."""
import importlib.util
import os.path as osp

import pytest
import torch
from mmengine.config import Config
from tiny_configs import (CASCADE_X101, FASTER_R50, PSPNET_R18, PSPNET_R101,
                          SEG_SIZE)

from mmdistill.analysis import probe_model, suggest
from mmdistill.analysis.probe import (COMPUTED_FROM, PER_ROI, ProbeError,
                                      profile_of)
from mmdistill.analysis.suggest import (configs_root, find_source,
                                        load_settings)
from mmdistill.utils.config import load_config

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
TOOL = osp.join(ROOT, 'tools', 'analysis', 'suggest_pairs.py')
SIZE = ['--size', str(SEG_SIZE[0]), str(SEG_SIZE[1])]
MLP = 'configs/mlp/mlp_backbone_pspnet-r101_pspnet-r18_{}_cityscapes-{}.py'
TAT = 'configs/tat/tat_backbone_pspnet-r101_pspnet-r18_80k_cityscapes-' \
    '512x1024.py'
#: PSPNet R18-d8 made a stride-32 ResNet (no dilation)
STRIDE_32 = ['model.backbone.strides=(1,2,2,2)',
             'model.backbone.dilations=(1,1,1,1)']


def load_tool():
    spec = importlib.util.spec_from_file_location('suggest_pairs_tool',
                                                  TOOL)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def probes(student, teacher, student_options=None):
    s_cfg = Config.fromfile(student)
    if student_options:
        s_cfg.merge_from_dict(student_options)
    return (probe_model(s_cfg, student, SEG_SIZE),
            probe_model(Config.fromfile(teacher), teacher, SEG_SIZE))


def stage(probe, path):
    return next(c for c in probe.by_role('stage') if c.path == path)


# ---------------------------------------------- 1: overrides written
def test_written_config_builds_the_probed_models(pair_files, tmp_path):
    """--cfg-options / --teacher-cfg-options are in the written config:
    built again, its student and teacher have the channels the connector
    was filled in with, and the distiller builds."""
    from mmengine.registry import MODELS, DefaultScope

    from mmdistill.testing import use_random_teacher
    from mmdistill.utils.config import student_config
    student, teacher = pair_files(PSPNET_R18, PSPNET_R101, 'seg')
    out = str(tmp_path / 'configs' / 'mlp.py')
    # Bottleneck ResNets: 4x the channels of the tiny BasicBlock ones
    result = load_tool().main([
        student, teacher, '--method', 'mlp', '--out', out, *SIZE,
        '--cfg-options', 'model.backbone.depth=50',
        'model.decode_head.in_channels=256',
        'model.auxiliary_head.in_channels=128', 'train_cfg.max_iters=3',
        '--teacher-cfg-options', 'model.backbone.depth=50',
        'model.decode_head.in_channels=512',
        'model.auxiliary_head.in_channels=256'])
    assert 'error' not in result, result.get('error')
    cfg = Config.fromfile(out)
    connector = cfg.model.distill.stage.connector
    assert (connector.in_channels, connector.out_channels) == (256, 512)
    assert cfg.train_cfg.max_iters == 3  # merged into the base's train_cfg
    assert cfg.train_cfg.type == 'IterBasedTrainLoop'
    assert cfg.model.teacher.cfg_options == {
        'model.backbone.depth': 50, 'model.decode_head.in_channels': 512,
        'model.auxiliary_head.in_channels': 256}
    # the written student and teacher, probed again
    written_student = probe_model(student_config(cfg), out, SEG_SIZE)
    t_cfg = load_config(cfg.model.teacher.config)
    t_cfg.merge_from_dict(cfg.model.teacher.cfg_options)
    written_teacher = probe_model(t_cfg, teacher, SEG_SIZE)
    assert stage(written_student, 'backbone.layer4').channels == 256
    assert stage(written_teacher, 'backbone.layer4').channels == 512
    use_random_teacher(cfg, str(tmp_path / 'teacher.pth'))
    with DefaultScope.overwrite_default_scope(cfg.default_scope):
        distiller = MODELS.build(cfg.model)  # as the Runner builds it
    assert distiller.student.backbone.depth == 50


def test_the_students_own_hooks_and_imports_stay(pair_files, tmp_path):
    """A student config with custom_hooks (RTMDet's EMAHook) and
    custom_imports: the written config keeps both (mmdistill's hooks go into
    default_hooks, TeacherCheckHook after the student's own); a
    --cfg-options change of the student's hooks is written in full."""
    student, teacher = pair_files(PSPNET_R18, PSPNET_R101, 'seg')
    with open(student, 'a') as f:
        f.write("\ncustom_imports = dict(imports=['mmdistill.testing'], "
                'allow_failed_imports=False)\n'
                "custom_hooks = [dict(type='EMAHook', momentum=0.0002)]\n")
    out = str(tmp_path / 'mlp.py')
    result = load_tool().main([student, teacher, '--method', 'mlp',
                               '--out', out, *SIZE])
    assert 'error' not in result, result.get('error')
    with open(out) as f:
        assert "*_base_.get('custom_hooks', [])" in f.read()
    cfg = Config.fromfile(out)
    assert cfg.custom_imports.imports == ['mmdistill.testing']
    assert [h.type for h in cfg.custom_hooks] == [
        'EMAHook', 'mmdistill.TeacherCheckHook']
    assert cfg.default_hooks.student_checkpoint.type == \
        'mmdistill.StudentCheckpointHook'
    assert cfg.default_hooks.checkpoint.type == 'CheckpointHook'

    out = str(tmp_path / 'changed.py')
    result = load_tool().main([
        student, teacher, '--method', 'mlp', '--out', out, *SIZE,
        '--no-teacher-check', '--cfg-options', 'custom_hooks.0.momentum=0.5'])
    assert 'error' not in result, result.get('error')
    cfg = Config.fromfile(out)
    assert [(h.type, h.momentum) for h in cfg.custom_hooks] == [
        ('EMAHook', 0.5)]


def test_classifier_config_is_written_and_trains(tmp_path):
    """--method kd on two mmpretrain classifiers writes the logit pair and
    the KD config's weight of the student's own loss; the written config
    builds and computes its losses. Other classes than the student's stop
    with a clear message."""
    from mmengine.registry import MODELS, DefaultScope

    from mmdistill.testing import use_random_teacher
    from mmdistill.testing.batches import random_batch
    student = 'mmpretrain::resnet/resnet18_8xb32_in1k.py'
    teacher = 'mmpretrain::resnet/resnet34_8xb32_in1k.py'
    out = str(tmp_path / 'kd.py')
    result = load_tool().main([student, teacher, '--method', 'kd', '--out',
                               out, '--size', '64', '64'])
    assert 'error' not in result, result.get('error')
    cfg = Config.fromfile(out)
    assert cfg.model.distill.logits.student == 'head.fc'
    assert cfg.model.distill.logits.loss.type == 'KDLoss'
    assert cfg.model.student.head.loss.loss_weight == 0.5
    assert cfg.model.student.backbone.depth == 18
    use_random_teacher(cfg, str(tmp_path / 'teacher.pth'))
    with DefaultScope.overwrite_default_scope(cfg.default_scope):
        model = MODELS.build(dict(cfg.model,
                                  data_preprocessor=cfg.data_preprocessor))
    data = model.data_preprocessor(random_batch('cls', (64, 64)), True)
    losses = model.loss(data['inputs'], data['data_samples'])
    assert set(losses) == {'loss', 'loss_distill_logits'}

    result = load_tool().main([
        student, teacher, '--method', 'dist', '--size', '64', '64',
        '--teacher-cfg-options', 'model.head.num_classes=10'])
    assert 'logit distillation needs the same classes' in result['error']


def test_student_overrides_through_lists_write_the_whole_value(tmp_path):
    """A --cfg-options key through a list index writes the overridden
    top-level value whole (mmengine merges dicts, not list items)."""
    from mmdistill.analysis.suggest import student_overrides
    cfg = Config(dict(train_cfg=dict(type='Loop', max_iters=8),
                      pipeline=[dict(type='A', x=1), dict(type='B', y=2)]))
    options = {'pipeline.1.y': 5, 'train_cfg.max_iters': 3,
               'train_cfg.val_interval': 1}
    cfg.merge_from_dict(options)
    assert student_overrides(options, cfg) == dict(
        pipeline=[dict(type='A', x=1), dict(type='B', y=5)],
        train_cfg=dict(max_iters=3, val_interval=1))


# ------------------------------------- 2: pair-level settings of TaT
def test_tat_keeps_the_pair_level_settings(pair_files):
    """Every pair-level key of the shipped TaT config but the taps (its
    anchor pair's with_cp=True) is in the proposal."""
    settings = load_settings('tat', 'seg-homo')
    assert settings.pairs['anchor']['extra'] == dict(with_cp=True)
    assert settings.pairs['patch_group']['extra'] == {}
    s, t = probes(*pair_files(PSPNET_R18, PSPNET_R101, 'seg'))
    distill = suggest(s, t, 'tat').distill
    assert distill['anchor']['with_cp'] is True
    assert 'with_cp' not in distill['patch_group']
    shipped = load_config(osp.join(ROOT, TAT)).model.distill
    for name, spec in shipped.items():
        assert set(distill[name]) == set(spec)


# ------------------------------ 3: a distillation config as a model
@pytest.mark.parametrize('role', ['student', 'teacher'])
def test_distillation_config_is_refused_before_building(role):
    """A shipped distillation config given as STUDENT or TEACHER stops
    before anything is built (its teacher checkpoint is a URL) and names
    the config of the model wanted."""
    path = osp.join(ROOT, TAT)
    with pytest.raises(ProbeError) as err:
        probe_model(load_config(path), path, role=role)
    message = str(err.value)
    assert 'is a distillation config' in message
    assert f"give the {role}'s own model config" in message
    wanted = PSPNET_R18 if role == 'student' else PSPNET_R101
    assert wanted in message and '\n' not in message


def test_distillation_config_names_the_nearest_file_of_its_student(
        pair_files, tmp_path):
    """A user's chain: the distillation config inherits a local file that
    changes the student's model; that file is named, not the one it
    inherits (whose model is not the student's)."""
    student, teacher = pair_files(PSPNET_R18, PSPNET_R101, 'seg')
    local = tmp_path / 'my_student.py'
    local.write_text(f'_base_ = [{student!r}]\n'
                     'model = dict(decode_head=dict(dropout_ratio=0.3))\n')
    distill = tmp_path / 'my_distill.py'
    distill.write_text(
        "_base_ = ['my_student.py']\n"
        "model = dict(_delete_=True, type='mmdistill.SingleTeacherDistiller',"
        ' student={{_base_.model}}, teacher=dict(config=' + repr(teacher) +
        ", checkpoint='t.pth'), distill=dict())\n")
    with pytest.raises(ProbeError) as err:
        probe_model(load_config(str(distill)), str(distill), role='student')
    message = str(err.value)
    assert f'its student comes from {local}' in message
    assert f'from {student}' not in message


def test_distillation_config_is_one_line_from_the_tool(pair_files, capsys):
    student, _ = pair_files(PSPNET_R18, PSPNET_R101, 'seg')
    code = load_tool().run([student, osp.join(ROOT, TAT), '--method',
                            'mlp'])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1
    assert len(err) == 1 and err[0].startswith('error: ')
    assert 'is a distillation config' in err[0] and PSPNET_R101 in err[0]


# ----------------------------- 4: a student stage shallower than last
def test_shallower_student_stage_is_named(pair_files):
    """A stride-32 student and a stride-8 teacher: the stride-8 student
    stage is proposed, with a note naming the last stage and its stride,
    and the resize alternative."""
    student, teacher = pair_files(PSPNET_R18, PSPNET_R101, 'seg')
    options = dict(o.split('=', 1) for o in STRIDE_32)
    options = {k: eval(v) for k, v in options.items()}  # noqa: S307
    s, t = probes(student, teacher, options)
    assert stage(s, 'backbone.layer4').stride == 32
    suggestion = suggest(s, t, 'mlp')
    assert suggestion.distill['stage']['student'] == 'backbone.layer2'
    note = next(n for n in suggestion.notes if 'last stage' in n)
    assert "stage backbone.layer2 (stride 8" in note
    assert 'last stage backbone.layer4 (stride 32' in note
    assert "resize=dict(mode='bilinear')" in note
    # the student's last stage at the teacher's stride: no note
    s, t = probes(student, teacher)
    assert not any('last stage' in n for n in suggest(s, t, 'mlp').notes)


def test_shallower_stage_of_a_transformer_student_is_named(pair_files):
    """A SegFormer (MiT) student returns its stages by index
    (``backbone[i]``, one path): pairing its stride-8 stage with a
    stride-8 teacher gets the note too (it compared paths, and said
    nothing)."""
    _, teacher = pair_files(PSPNET_R18, PSPNET_R101, 'seg')
    config = 'mmseg::segformer/segformer_mit-b0_8xb2-160k_ade20k-512x512.py'
    cfg = load_config(config)
    cfg.model.backbone.init_cfg = None
    s = probe_model(cfg, config, SEG_SIZE)
    t = probe_model(Config.fromfile(teacher), teacher, SEG_SIZE)
    suggestion = suggest(s, t, 'mlp')
    assert suggestion.distill['stage']['student'] == 'backbone[1]'
    note = next(n for n in suggestion.notes if 'last stage' in n)
    assert "stage backbone[1] (stride 8" in note
    assert 'last stage backbone[3] (stride 32' in note


@pytest.mark.parametrize('method', ['mlp', 'cwd', 'tat'])
def test_no_student_layer_of_the_teachers_stride_is_resized(
        pair_files, tmp_path, method):
    """A stride-8 student (R18-d8) and a stride-32 teacher: no student
    stage or logits have the teacher's stride, so the student's last stage
    (logits) is paired and its connector pools it to the teacher's size
    (TaT's patch-grid note counts the teacher's map); the written config
    builds and one step trains."""
    from mmengine.registry import MODELS, DefaultScope

    from mmdistill.testing import random_batch, use_random_teacher
    student, teacher = pair_files(PSPNET_R18, PSPNET_R101, 'seg')
    out = str(tmp_path / f'{method}.py')
    result = load_tool().main([student, teacher, '--method', method, '--out',
                               out, *SIZE, '--teacher-cfg-options',
                               *STRIDE_32])
    assert 'error' not in result, result.get('error')
    cfg = Config.fromfile(out)
    for name, pair in cfg.model.distill.items():
        assert pair.connector.resize == dict(mode='pool'), name
        if method == 'mlp':
            assert pair.student == 'backbone.layer4'
            assert pair.connector.type == 'MLPConnector'
        if method == 'cwd':
            assert pair.connector.type == 'IdentityConnector'
    assert any('differ in size' in note and "mode='pool'" in note
               for note in result['notes'])
    if method == 'tat':
        grid = next(n for n in result['notes'] if 'patch grid' in n)
        assert "(the teacher's, which resize brings it to)" in grid
        assert 'at stride 32' in grid
    use_random_teacher(cfg, str(tmp_path / 'teacher.pth'))
    with DefaultScope.overwrite_default_scope(cfg.default_scope):
        distiller = MODELS.build(cfg.model)
    data = distiller.data_preprocessor(random_batch('seg', SEG_SIZE, 2, 19),
                                       True)
    distiller.train()
    losses = distiller(data['inputs'], data['data_samples'], mode='loss')
    for name in cfg.model.distill:
        assert torch.isfinite(losses[f'loss_distill_{name}'])


# ------------------------------------------- 5: preprocessing warning
def test_preprocessing_warning_rounds_and_names_the_fix(pair_files,
                                                        capsys):
    student, teacher = pair_files(PSPNET_R18, PSPNET_R101, 'seg')
    load_tool().main([
        student, teacher, '--method', 'mlp', *SIZE,
        '--teacher-cfg-options', 'model.data_preprocessor.mean=[1.5,2,3]'])
    out = capsys.readouterr().out
    line = next(x for x in out.splitlines() if x.startswith('Warning'))
    assert 'mean: student [123.675, 116.28, 103.53], teacher [1.5, 2, 3]' \
        in line
    assert '123.67500305175781' not in out
    assert "teacher=dict(..., data_preprocessor='own')" in line
    assert "data_preprocessor match the teacher's" in line


# ------------------------------------------- 6: the cited source config
@pytest.mark.parametrize('schedule,crop', [('80k', '512x1024'),
                                           ('40k', '512x512')])
def test_source_matches_crop_and_schedule(schedule, crop):
    """The shipped config whose student has the crop and schedule of the
    one given is cited, not the first by name."""
    shipped = load_config(osp.join(ROOT, MLP.format(schedule, crop)))
    student = profile_of(shipped, shipped.model.student)
    assert student['crop'] == tuple(int(v) for v in crop.split('x'))
    teacher = profile_of(load_config(PSPNET_R101))
    path = find_source('mlp', 'seg-homo', 'ResNetV1c', student, teacher)
    assert osp.relpath(path, osp.dirname(configs_root())) == \
        MLP.format(schedule, crop)


def test_source_for_the_stock_student():
    """The stock 80k 512x1024 PSPNet R18 gets the 80k 512x1024 config
    (the 40k 512x512 one comes first by name)."""
    student = profile_of(load_config(PSPNET_R18))
    assert student['crop'] == (512, 1024)
    assert student['schedule'] == ('iters', 80000)
    teacher = profile_of(load_config(PSPNET_R101))
    settings = load_settings('mlp', 'seg-homo', 'ResNetV1c', student,
                             teacher)
    assert settings.source == MLP.format('80k', '512x1024')
    # without profiles: as before, the first by name
    assert load_settings('mlp', 'seg-homo', 'ResNetV1c').source == \
        MLP.format('40k', '512x512')


# ----------------------------------------------- 7: TaT's grid note
def test_tat_note_uses_the_student_crop(pair_files):
    s, t = probes(*pair_files(PSPNET_R18, PSPNET_R101, 'seg'))
    assert s.profile['crop'] == SEG_SIZE
    note = next(n for n in suggest(s, t, 'tat').notes
                if 'patch grid' in n)
    assert "16 x 16 for the student's 128 x 128 crops at stride 8" in note
    assert note.endswith(': it does')
    assert '512 x 1024' not in note
    s.profile['crop'] = (96, 96)  # a 12 x 12 map
    note = next(n for n in suggest(s, t, 'tat').notes
                if 'patch grid' in n)
    assert '12 x 12' in note and 'it does NOT' in note
    s.profile['crop'] = None  # no crop in the config: the probed map
    note = next(n for n in suggest(s, t, 'tat').notes
                if 'patch grid' in n)
    assert '16 x 16 for the probed 128 x 128 input at stride 8' in note


# ---------------------------------------------- 8: one-line errors
def test_existing_out_and_missing_config_are_one_line(pair_files, tmp_path,
                                                      capsys):
    student, teacher = pair_files(PSPNET_R18, PSPNET_R101, 'seg')
    tool = load_tool()
    out = tmp_path / 'taken.py'
    out.write_text('# mine\n')
    assert tool.run([student, teacher, '--method', 'mlp', '--out',
                     str(out)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f'error: {out} exists; give another --out or add '
                   '--force.']
    assert out.read_text() == '# mine\n'
    missing = str(tmp_path / 'no_such.py')
    assert tool.run([missing, teacher, '--method', 'mlp']) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert err[0].startswith(f"error: Config file '{missing}' does not "
                             'exist')


# ------------------------------------ 9: Cascade R-CNN head outputs
def test_cascade_roi_head_outputs_are_listed(pair_files):
    """Cascade R-CNN's RoI head returns scores averaged over its stages
    and split per image, which no module computes itself: its last
    stage's classifier and regressor are listed, with a note."""
    from mmdistill.analysis import format_candidates
    _, teacher = pair_files(FASTER_R50, CASCADE_X101, 'det')
    probe = probe_model(Config.fromfile(teacher), teacher)
    heads = {c.path: c for c in probe.by_role('head')}
    last = probe.model.roi_head.num_stages - 1
    fc_cls = heads[f'roi_head.bbox_head.{last}.fc_cls']
    # one row per region of interest, not per image
    assert fc_cls.note == f'{PER_ROI}; {COMPUTED_FROM}'
    assert fc_cls.channels == 81 and fc_cls.stride is None
    assert f'roi_head.bbox_head.{last}.fc_reg' in heads
    assert probe.unlisted == []
    text = format_candidates(probe, 'Teacher')
    assert f'roi_head.bbox_head.{last}.fc_cls' in text
    assert COMPUTED_FROM in text
    # the mask head's per-RoI maps have no stride (it showed 9.14x9.14)
    masks = heads['roi_head.mask_head.2.conv_logits']
    assert masks.stride is None and masks.note.startswith(PER_ROI)
