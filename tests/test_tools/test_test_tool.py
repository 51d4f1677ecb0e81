"""tools/test.py reproduces the same metric and predictions from a
distiller's runner checkpoint, its student export and its published file;
dist_test.sh and slurm_test.sh (with a stand-in srun) do in 2 processes."""
import glob
import json
import os
import os.path as osp
import pickle
import stat
import sys

import pytest
import torch
from conftest import run_tool
from tools_support import free_port, tool_env

pytestmark = pytest.mark.slow

FAKE_SRUN = """#!/usr/bin/env bash
# Stand-in for Slurm's srun: start --ntasks copies of the command with the
# SLURM_* variables that srun sets, on this machine.
ntasks=1
while [[ $# -gt 0 ]]; do
    case "$1" in
        --ntasks=*) ntasks=${1#*=}; shift ;;
        -p) shift 2 ;;
        -*) shift ;;
        *) break ;;
    esac
done
pids=()
for ((i = 0; i < ntasks; i++)); do
    SLURM_PROCID=$i SLURM_LOCALID=$i SLURM_NTASKS=$ntasks \\
    SLURM_NODELIST=localhost "$@" &
    pids+=($!)
done
status=0
for pid in "${pids[@]}"; do wait "$pid" || status=$?; done
exit $status
"""


def metrics_of(work_dir):
    """The metrics of the (single) test run logged in ``work_dir``."""
    files = glob.glob(osp.join(work_dir, '*', '*.json'))
    assert len(files) == 1, files
    with open(files[0]) as f:
        metrics = json.loads(f.readlines()[-1])
    return {k: v for k, v in metrics.items() if k.startswith('coco/')}


def predictions_of(path):
    with open(path, 'rb') as f:
        results = pickle.load(f)
    return {r['img_id']: r['pred_instances'] for r in results}


def assert_same_predictions(a, b):
    assert a.keys() == b.keys()
    for img_id in a:
        for field in ('bboxes', 'scores', 'labels'):
            assert torch.equal(a[img_id][field], b[img_id][field]), (img_id,
                                                                     field)


def run_test_tool(*args, work_dir, env=None, check=True):
    out = osp.join(work_dir, 'predictions.pkl')
    command = [sys.executable, 'tools/test.py', *args]
    command += ['--work-dir', work_dir, '--out', out]
    result = run_tool(command, env=env, check=check)
    return result, out


@pytest.fixture(scope='module')
def exported_run(trained):
    """tools/test.py with the student config the hook wrote and the
    student-only export, painting the predictions too: its work dir and
    predictions file (the reference of the tests below)."""
    work = trained['work_dir']
    work_dir = osp.join(trained['root'], 'test_b')
    _, out = run_test_tool(
        osp.join(work, 'student_config.py'),
        osp.join(work, 'epoch_1_student.pth'),
        '--show-dir',
        'painted',
        '--cfg-options',
        'default_hooks.visualization.type=DetVisualizationHook',
        work_dir=work_dir)
    return work_dir, out


def test_same_metric_from_runner_checkpoint_export_and_release(
        trained, exported_run):
    work = trained['work_dir']
    runner_ckpt = osp.join(work, 'epoch_1.pth')
    student_cfg = osp.join(work, 'student_config.py')
    root = trained['root']

    # the distillation config with its runner checkpoint
    result, out_a = run_test_tool(
        trained['config'], runner_ckpt, work_dir=f'{root}/test_a')
    assert 'testing its student alone' in result.stdout
    # the student config with the student-only export
    _, out_b = exported_run
    # the released file
    release = run_tool([
        sys.executable, 'tools/publish_model.py', runner_ckpt,
        f'{root}/release/retinanet.pth'
    ])
    published, = glob.glob(f'{root}/release/retinanet-*.pth')
    assert published in release.stdout
    _, out_c = run_test_tool(
        student_cfg, published, work_dir=f'{root}/test_c')

    metric_a = metrics_of(f'{root}/test_a')
    assert 'coco/bbox_mAP' in metric_a
    assert metrics_of(f'{root}/test_b') == metric_a
    assert metrics_of(f'{root}/test_c') == metric_a
    pred_a = predictions_of(out_a)
    assert len(pred_a) == 4 and all(
        len(p['scores']) for p in pred_a.values())
    assert_same_predictions(pred_a, predictions_of(out_b))
    assert_same_predictions(pred_a, predictions_of(out_c))
    painted = glob.glob(f'{root}/test_b/*/painted/*.png')
    assert len(painted) == 4, painted


def test_checkpoint_that_does_not_fit(trained, tmp_path):
    teacher = osp.join(trained['root'], 'retinanet_teacher.pth')  # wider
    result, _ = run_test_tool(
        osp.join(trained['work_dir'], 'student_config.py'),
        teacher,
        work_dir=str(tmp_path / 'w'),
        check=False)
    assert result.returncode != 0
    assert 'does not fit the model of the config' in result.stdout
    result, _ = run_test_tool(
        trained['config'],
        str(tmp_path / 'missing.pth'),
        work_dir=str(tmp_path / 'w2'),
        check=False)
    assert result.returncode != 0
    assert 'does not exist' in result.stdout


def test_dist_test_two_processes(trained, exported_run, tmp_path):
    """dist_test.sh (torchrun) with the student config and the distiller's
    runner checkpoint: the metric of one process."""
    work = trained['work_dir']
    out = str(tmp_path / 'predictions.pkl')
    run_tool([
        'bash', 'tools/dist_test.sh',
        osp.join(work, 'student_config.py'),
        osp.join(work, 'epoch_1.pth'), '2', '--work-dir',
        str(tmp_path / 'w'), '--out', out
    ],
             env=tool_env(port=free_port()))
    reference_dir, reference = exported_run
    assert metrics_of(str(tmp_path / 'w')) == metrics_of(reference_dir)
    assert_same_predictions(predictions_of(out), predictions_of(reference))


def test_slurm_test_two_tasks(trained, tmp_path):
    """slurm_test.sh through a stand-in srun that starts 2 tasks here: the
    slurm launcher on CPU processes."""
    bin_dir = tmp_path / 'bin'
    bin_dir.mkdir()
    srun = bin_dir / 'srun'
    srun.write_text(FAKE_SRUN)
    srun.chmod(srun.stat().st_mode | stat.S_IEXEC)
    env = tool_env()
    env.update(
        PATH=f'{bin_dir}{os.pathsep}{env["PATH"]}',
        GPUS='2',
        GPUS_PER_NODE='2',
        GRES='',
        MASTER_ADDR='127.0.0.1',
        MASTER_PORT=str(free_port()))
    work = trained['work_dir']
    out = str(tmp_path / 'predictions.pkl')
    run_tool([
        'bash', 'tools/slurm_test.sh', 'cpu', 'test',
        trained['config'],
        osp.join(work, 'epoch_1.pth'), '--work-dir',
        str(tmp_path / 'w'), '--out', out
    ],
             env=env)
    metrics = metrics_of(str(tmp_path / 'w'))
    assert 'coco/bbox_mAP' in metrics
    assert len(predictions_of(out)) == 4
