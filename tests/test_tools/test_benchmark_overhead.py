"""tools/analysis/benchmark_overhead.py on small real configs (structure
and consistency of its report, its parts and ratios; timings are never
asserted)."""
import json
import os.path as osp

import pytest

from tools_support import load_script

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
TOOL = osp.join(ROOT, 'tools', 'analysis', 'benchmark_overhead.py')
CONFIG = osp.join(ROOT, 'demo', 'configs', 'seg',
                  'mlp_backbone_pspnet_r50-r18_synth.py')
FGD_CONFIG = osp.join(ROOT, 'demo', 'configs', 'det',
                      'fgd_fpn_retinanet_r50-r18_synth.py')


def load_tool():
    return load_script(TOOL, 'benchmark_overhead')


def run(config, *extra, tmp_path):
    out = tmp_path / 'overhead.json'
    result = load_tool().main([
        config, '--random-teacher', '--size', '64', '64', '--iters', '2',
        '--warmup', '1', '--device', 'cpu', '--out', str(out), *extra
    ])
    saved = json.loads(out.read_text())
    assert saved == json.loads(json.dumps(result))
    return saved


def check_parts(saved, pairs):
    """The parts add up and the ratios are what they say."""
    student, distiller = saved['student'], saved['distiller']
    parts = saved['parts']
    assert sorted(parts['pairs_sec']) == sorted(pairs)
    assert parts['student_step_sec'] == student['sec_per_iter']
    assert parts['teacher_to_deepest_tap_sec'] == distiller[
        'teacher_to_deepest_tap_sec'] == saved['teacher']['to_tap_sec']
    assert parts['sum_sec'] == pytest.approx(
        parts['student_step_sec'] + parts['teacher_to_deepest_tap_sec'] +
        sum(parts['pairs_sec'].values()))
    assert saved['distiller_over_parts'] == pytest.approx(
        distiller['sec_per_iter'] / parts['sum_sec'])
    assert saved['distiller_over_floor'] == pytest.approx(
        distiller['sec_per_iter'] /
        (student['sec_per_iter'] + distiller['teacher_to_deepest_tap_sec']))
    assert saved['time_ratio'] == pytest.approx(
        distiller['sec_per_iter'] / student['sec_per_iter'])
    assert saved['memory_ratio'] == pytest.approx(
        distiller['peak_memory_mb'] / student['peak_memory_mb'])
    for value in (student['sec_per_iter'], distiller['sec_per_iter'],
                  distiller['teacher_to_deepest_tap_sec'],
                  distiller['teacher_full_forward_sec'],
                  *parts['pairs_sec'].values()):
        assert value > 0


def test_report_of_a_distillation_config(tmp_path, capsys):
    saved = run(CONFIG, tmp_path=tmp_path)
    check_parts(saved, ['stage4'])
    assert saved['input_size'] == [64, 64] and saved['iters'] == 2
    assert saved['amp'] is False and saved['amp_dtype'] is None
    weights = saved['teacher'].pop('weights_mb')
    assert saved['teacher'] == dict(
        dtype=None, channels_last=False,
        to_tap_sec=saved['parts']['teacher_to_deepest_tap_sec'])
    # peak allocated (also on the CPU): the distiller holds the teacher's
    # weights on top of what the student's step holds
    assert saved['distiller']['peak_memory_mb'] >= (
        saved['student']['peak_memory_mb'] + weights)
    assert 'peak allocated in a training step' in saved['memory_measure']
    printed = capsys.readouterr().out
    for text in ('student alone', 'teacher to deepest tap',
                 'pair stage4 (conn.+loss f+b)', 'sum of parts',
                 'distiller / sum of parts'):
        assert text in printed, text
    assert 'teacher to tap in float32' not in printed


def test_teacher_options_and_their_saving(tmp_path, capsys):
    saved = run(CONFIG, '--teacher-dtype', 'bfloat16',
                '--teacher-channels-last', tmp_path=tmp_path)
    check_parts(saved, ['stage4'])
    teacher = saved['teacher']
    assert teacher['dtype'] == 'bfloat16' and teacher['channels_last']
    assert teacher['saving'] == pytest.approx(
        teacher['to_tap_float32_sec'] / teacher['to_tap_sec'])
    printed = capsys.readouterr().out
    assert 'teacher bfloat16, teacher channels_last' in printed
    assert 'teacher to tap in float32' in printed


def test_every_pair_of_a_detection_config(tmp_path):
    """FGD: five FPN pairs whose losses read the data samples."""
    saved = run(FGD_CONFIG, tmp_path=tmp_path)
    check_parts(saved, [f'fpn_{i}' for i in range(5)])


def test_size_drives_a_fixed_size_preprocessor():
    """mmseg pads every batch to its data preprocessor's ``size``: --size
    sets it, so the report states what the models ran at."""
    from mmengine.config import Config
    tool = load_tool()
    cfg = Config.fromfile(CONFIG)
    crop = tuple(cfg.model.student.data_preprocessor.size)
    assert tool.input_size(cfg, tool.parse_args(['x.py']), 'seg') == crop
    args = tool.parse_args(['x.py', '--size', '32', '48'])
    assert tool.input_size(cfg, args, 'seg') == (32, 48)
    assert tuple(cfg.model.student.data_preprocessor.size) == (32, 48)
    cfg = Config.fromfile(FGD_CONFIG)  # mmdet: no fixed size
    args = tool.parse_args(['x.py'])
    assert tool.input_size(cfg, args, 'det') == (512, 512)


def test_amp_options():
    tool = load_tool()
    args = tool.parse_args(['x.py', '--amp-dtype', 'bfloat16'])
    assert args.amp and args.amp_dtype == 'bfloat16'
    args = tool.parse_args(['x.py', '--amp'])
    assert args.amp and args.amp_dtype == 'float16'
    # tools/train.py's check (shared), before anything is built
    with pytest.raises(ValueError) as exc:
        tool.main([CONFIG, '--amp-dtype', 'bfloat16', '--device', 'cpu',
                   '--random-teacher'])
    from mmdistill.utils.setup_env import amp_device_error
    assert str(exc.value) == amp_device_error(
        'cpu', '--amp/--amp-dtype', '--teacher-dtype bfloat16')
    assert ('--amp/--amp-dtype needs a CUDA, NPU, MLU or MUSA device'
            in str(exc.value))
    assert '--teacher-dtype bfloat16 runs the teacher' in str(exc.value)


def test_cuda_asked_without_cuda_is_one_line(monkeypatch):
    import torch
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: False)
    with pytest.raises(SystemExit, match=r'^benchmark_overhead.py: --device '
                       r'cuda, but this torch \(.*\) sees no CUDA device: '
                       'run it on a GPU machine, or measure with --device '
                       'cpu.$'):
        load_tool().main([CONFIG, '--device', 'cuda', '--random-teacher'])


@pytest.mark.parametrize('teacher', [
    'http://127.0.0.1:9/no_such_benchmark_teacher.pth', 'no_such_teacher.pth'
])
def test_a_teacher_checkpoint_it_cannot_read_names_random_teacher(
        tmp_path, monkeypatch, teacher):
    """Without network, a URL teacher said to download it elsewhere or to
    put it in torch's hub cache, not that --random-teacher measures the
    same cost without it."""
    import torch

    from mmdistill.utils.checkpoint import CheckpointError
    monkeypatch.setattr(torch.hub, 'get_dir', lambda: str(tmp_path / 'hub'))
    if '://' not in teacher:
        teacher = str(tmp_path / teacher)
    tool = load_tool()
    argv = [CONFIG, '--size', '32', '32', '--iters', '1', '--warmup', '0',
            '--device', 'cpu', '--cfg-options',
            f'model.teacher.checkpoint={teacher}']
    with pytest.raises((CheckpointError, FileNotFoundError)) as exc:
        tool.main(argv)
    message = str(exc.value)
    if '://' in teacher:
        assert isinstance(exc.value, CheckpointError)
        assert f'Could not download the checkpoint {teacher}' in message
    else:
        assert isinstance(exc.value, FileNotFoundError)
        assert 'was not found' in message
    assert ('--random-teacher gives the teacher random weights instead of '
            f'loading {teacher!r}') in message
    saved = tool.main(argv + ['--random-teacher'])
    assert saved['distiller']['sec_per_iter'] > 0


def test_a_missing_teacher_config_gets_no_random_teacher_hint(tmp_path):
    """--random-teacher cannot help when the teacher's config is missing:
    the hint is only for a checkpoint it cannot read."""
    missing = str(tmp_path / 'no_such_teacher_config.py')
    with pytest.raises(FileNotFoundError) as exc:
        load_tool().main([CONFIG, '--size', '32', '32', '--iters', '1',
                          '--device', 'cpu', '--cfg-options',
                          f'model.teacher.config={missing}'])
    assert '--random-teacher' not in str(exc.value)


def test_refuses_a_config_without_a_distiller():
    student = osp.join(ROOT, 'demo', 'configs', 'seg',
                       'pspnet_r18-w8_student_synth.py')
    with pytest.raises(ValueError, match='not a distillation config'):
        load_tool().main([student, '--random-teacher', '--iters', '1'])


def test_random_teacher_of_a_stock_config(tmp_path):
    """A stock mmseg teacher (``pretrained=...``, ImageNet init) gets random
    weights without a download and loads strictly into the distiller."""
    from mmengine.config import Config

    from mmdistill.testing import use_random_teacher
    from mmdistill.utils.checkpoint import read_checkpoint
    cfg = Config.fromfile(osp.join(
        ROOT, 'configs', 'mlp',
        'mlp_backbone_pspnet-r101_pspnet-r18_80k_cityscapes-512x1024.py'))
    path = use_random_teacher(cfg, str(tmp_path / 'teacher.pth'))
    assert cfg.model.teacher.checkpoint == path
    state = read_checkpoint(path)['state_dict']
    assert any(k.startswith('backbone.layer4') for k in state)


def test_pairs_sharing_embeddings_are_one_part(tmp_path):
    """TaT's patch-group and anchor pairs share their embeddings: they are
    timed together, as one part named after both."""
    config = tmp_path / 'tat.py'
    tat = dict(type='TaTConnector', in_channels='auto', out_channels='auto')
    taps = "student='backbone.layer4', teacher='backbone.layer4'"
    config.write_text(
        f'_base_ = [{CONFIG!r}]\n'
        f'tat = {tat!r}\n'
        'model = dict(distill=dict(_delete_=True,\n'
        f'    patch_group=dict({taps}, loss=dict(type="MSELoss"),\n'
        '        connector=dict(tat, mode="patch_group", patch_grid=(2, 2),\n'
        '                       num_groups=2)),\n'
        f'    anchor=dict({taps}, loss=dict(type="MSELoss"),\n'
        '        connector=dict(tat, mode="anchor", anchor_size=(2, 2),\n'
        '                       embeddings_from="patch_group"))))\n')
    saved = run(str(config), tmp_path=tmp_path)
    check_parts(saved, ['patch_group+anchor'])


@pytest.mark.parametrize('config', [
    'configs/kd/kd_logits_resnet34_resnet18_100e_in1k.py',
    'configs/vit_attention/'
    'vit-attention_last-block_deit-small_deit-tiny_300e_in1k.py'
])
def test_mmpretrain_models_get_the_config_level_preprocessor(
        config, tmp_path):
    """mmpretrain configs set ``data_preprocessor`` at the top level and
    the Runner gives it to the model: the analysis tools build the student
    and the distiller the same way (normalised input, Mixup/CutMix with
    the class count), without a preprocessing warning."""
    import warnings

    from mmengine.config import Config

    from mmdistill.testing import random_batch
    from tools_support import load_script
    visualize = load_script(
        osp.join(ROOT, 'tools', 'analysis', 'visualize_features.py'),
        'visualize_features')
    tool = load_tool()
    cfg = Config.fromfile(osp.join(ROOT, config))
    args = tool.parse_args([config, '--random-teacher'])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always')
        models = [tool.build_student(cfg),
                  tool.build_distiller(cfg, args, str(tmp_path)),
                  visualize.build_distiller(
                      cfg, visualize.parse_args(
                          [config, 'image.png', '--random-teacher']),
                      str(tmp_path))]
    assert not [w for w in caught if 'preprocesses' in str(w.message)]
    for model in models:
        pre = model.data_preprocessor
        assert pre.mean.flatten().tolist() == pytest.approx(
            cfg.data_preprocessor.mean)
        data = pre(random_batch('cls', (32, 32), 2), True)  # Mixup/CutMix
        assert data['inputs'].shape == (2, 3, 32, 32)
