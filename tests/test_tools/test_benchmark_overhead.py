"""tools/analysis/benchmark_overhead.py on a small real config (structure
and consistency of its report; timings are never asserted)."""
import importlib.util
import json
import os.path as osp

import pytest

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
TOOL = osp.join(ROOT, 'tools', 'analysis', 'benchmark_overhead.py')
CONFIG = osp.join(ROOT, 'demo', 'configs', 'seg',
                  'mlp_backbone_pspnet_r50-r18_synth.py')


def load_tool():
    spec = importlib.util.spec_from_file_location('benchmark_overhead', TOOL)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_report_of_a_distillation_config(tmp_path, capsys):
    out = tmp_path / 'overhead.json'
    result = load_tool().main([
        CONFIG, '--random-teacher', '--size', '64', '64', '--iters', '2',
        '--warmup', '1', '--device', 'cpu', '--out', str(out)
    ])
    saved = json.loads(out.read_text())
    assert saved == json.loads(json.dumps(result))
    student, distiller = saved['student'], saved['distiller']
    assert saved['time_ratio'] == pytest.approx(
        distiller['sec_per_iter'] / student['sec_per_iter'])
    assert saved['memory_ratio'] == pytest.approx(
        distiller['peak_memory_mb'] / student['peak_memory_mb'])
    for value in (student['sec_per_iter'], distiller['sec_per_iter'],
                  distiller['teacher_to_deepest_tap_sec'],
                  distiller['teacher_full_forward_sec']):
        assert value > 0
    assert saved['input_size'] == [64, 64] and saved['iters'] == 2
    printed = capsys.readouterr().out
    assert 'student alone' in printed and 'teacher to deepest tap' in printed


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
        'mlp_backbone_pspnet_r101-r18_80k_cityscapes-512x1024.py'))
    path = use_random_teacher(cfg, str(tmp_path / 'teacher.pth'))
    assert cfg.model.teacher.checkpoint == path
    state = read_checkpoint(path)['state_dict']
    assert any(k.startswith('backbone.layer4') for k in state)
