"""``demo/run_demo.py --fast`` end to end: generated data, teacher, student,
distilled students (MLP + L2 and CWD / FGD for segmentation / detection, KD
and DKD for classification), evaluation, table export, and the student-only
checkpoints reloaded by plain mmseg / mmdet / mmpretrain and by
``tools/test.py`` with the same metric.

This checks the pipeline, not the gain (the fast variant trains a few
iterations); the gain is measured by the full demo.
"""
import importlib.util
import json
import os
import os.path as osp
import subprocess
import sys

import pytest
import torch

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
DEMO = osp.join(ROOT, 'demo', 'run_demo.py')

pytestmark = pytest.mark.slow


def _load_module(name, path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope='module')
def fast_demo(tmp_path_factory):
    work_dir = str(tmp_path_factory.mktemp('demo'))
    env = dict(os.environ, DEMO_FAST='1')
    proc = subprocess.run(
        [sys.executable, DEMO, '--work-dir', work_dir],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    with open(osp.join(work_dir, 'results.json')) as f:
        results = json.load(f)
    return work_dir, results, proc.stdout


def test_fast_demo_table_and_exports(fast_demo):
    work_dir, results, stdout = fast_demo
    assert results['mode'] == 'fast'
    assert osp.getsize(osp.join(work_dir, 'results.png')) > 1000
    assert set(results['table']) == {'seg', 'det', 'cls'}
    expected_rows = dict(seg=['teacher', 'student', 'mlp', 'cwd'],
                         det=['teacher', 'student', 'mlp', 'fgd'],
                         cls=['teacher', 'student', 'kd', 'dkd'])
    for task, rows in expected_rows.items():
        table = results['table'][task]
        assert list(table['rows']) == rows
        for role in rows:
            row = table['rows'][role]
            assert row['sec_per_iter'] > 0
            assert len(row['metric']['values']) == len(
                results['runs'][task][role])
            if role not in ('teacher', 'student'):
                for key in ('gain', 'gap_closed', 'beats_student'):
                    assert key in row
                assert row['label'] in stdout
        # every distilled run left a student-only checkpoint and its config
        for role in rows[2:]:
            for run in results['runs'][task][role]:
                assert osp.isfile(run['student_checkpoint'])
                assert osp.isfile(run['student_config'])
    # data generated once per task, with real photo content when available
    for task in ('seg', 'det'):
        assert osp.isfile(osp.join(work_dir, f'data_{task}', 'annotations',
                                   'val.json'))
    # classification: one crop per object of the scenes, mmpretrain's format
    with open(osp.join(work_dir, 'data_cls', 'annotations', 'val.txt')) as f:
        crops = f.read().split()
    assert crops and len(crops) % 2 == 0
    assert all(osp.isfile(osp.join(work_dir, 'data_cls', name))
               for name in crops[0::2])
    assert results['table']['cls']['metric'] == 'accuracy/top1'


def test_fast_demo_reloaded_students_match(fast_demo):
    _, results, _ = fast_demo
    checks = results['reload_checks']
    assert {(c['task'], c['role']) for c in checks} == {
        ('seg', 'mlp'), ('seg', 'cwd'), ('det', 'mlp'), ('det', 'fgd'),
        ('cls', 'kd'), ('cls', 'dkd')}
    for check in checks:
        assert check['equal'], check


def test_student_checkpoint_is_plain(fast_demo):
    """The student-only checkpoints load in plain mmseg/mmdet/mmpretrain with
    no missing or unexpected keys and carry the dataset's classes."""
    from mmdet.apis import init_detector
    from mmpretrain.apis import init_model as init_classifier
    from mmseg.apis import init_model

    from mmdistill.datasets import SYNTH_CLASSES
    _, results, _ = fast_demo
    seg = results['runs']['seg']['mlp'][0]
    model = init_model(seg['student_config'], seg['student_checkpoint'],
                       device='cpu')
    assert model.dataset_meta['classes'] == ('background', ) + SYNTH_CLASSES
    det = results['runs']['det']['fgd'][0]
    model = init_detector(det['student_config'], det['student_checkpoint'],
                          device='cpu')
    assert tuple(model.dataset_meta['classes']) == SYNTH_CLASSES
    cls = results['runs']['cls']['dkd'][0]
    model = init_classifier(cls['student_config'], cls['student_checkpoint'],
                            device='cpu')
    # mmpretrain's init_model keeps the checkpoint's dataset meta here
    assert tuple(model._dataset_meta['classes']) == SYNTH_CLASSES
    for run in (det, cls):
        ckpt = torch.load(run['student_checkpoint'], map_location='cpu')
        assert not any(k.startswith(('student.', 'connectors.',
                                     'distill_losses.', 'teacher.'))
                       for k in ckpt['state_dict'])


def test_tools_test_reproduces_the_demo_metric(fast_demo, tmp_path):
    """``tools/test.py student_config.py iter_N_student.pth`` prints the
    metric of the demo's table."""
    test_tool = osp.join(ROOT, 'tools', 'test.py')
    if not osp.isfile(test_tool):
        pytest.skip('tools/test.py is not there')
    _, results, _ = fast_demo
    tool = _load_module('mmdistill_tools_test', test_tool)
    for task, role, metric, scale in (('seg', 'cwd', 'mIoU', 1.0),
                                      ('det', 'mlp', 'coco/bbox_mAP', 100.),
                                      ('cls', 'kd', 'accuracy/top1', 1.0)):
        run = results['runs'][task][role][0]
        metrics = tool.main([
            run['student_config'], run['student_checkpoint'], '--work-dir',
            str(tmp_path / task)
        ])
        expected = results['table'][task]['rows'][role]['metric']['values'][0]
        assert scale * metrics.get(metric, 0.0) == pytest.approx(expected)
