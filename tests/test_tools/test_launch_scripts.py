"""Argument handling of dist_train.sh, dist_test.sh, slurm_train.sh and
slurm_test.sh: each is run with a recording stand-in for python / srun."""
import os
import os.path as osp
import stat
import subprocess

import pytest
from tools_support import ROOT

TOOLS = osp.join(ROOT, 'tools')
RECORDER = """#!/usr/bin/env bash
printf '%s\\n' "$@" > "$RECORD_ARGS"
printf '%s' "${PYTHONPATH:-}" > "$RECORD_ARGS.pythonpath"
"""


def recorder(tmp_path, name):
    path = tmp_path / name
    path.write_text(RECORDER)
    path.chmod(path.stat().st_mode | stat.S_IEXEC)
    return str(path)


def run_script(script, args, tmp_path, **env_vars):
    """Run tools/<script> with a recording ``python`` (PYTHON) and ``srun``
    (first on PATH); returns (CompletedProcess, recorded argv,
    recorded PYTHONPATH)."""
    record = tmp_path / 'args.txt'
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ('NNODES', 'NODE_RANK', 'MASTER_ADDR', 'PORT', 'GPUS',
                     'GPUS_PER_NODE', 'CPUS_PER_TASK', 'SRUN_ARGS', 'GRES',
                     'PYTHONPATH')
    }
    bin_dir = tmp_path / 'bin'
    bin_dir.mkdir(exist_ok=True)
    recorder(bin_dir, 'srun')
    env.update(
        PATH=f'{bin_dir}{os.pathsep}{env["PATH"]}',
        PYTHON=recorder(tmp_path, 'python'),
        RECORD_ARGS=str(record),
        **env_vars)
    result = subprocess.run(['bash', osp.join(TOOLS, script)] + args,
                            env=env,
                            cwd=str(tmp_path),
                            stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE,
                            text=True)
    argv = record.read_text().splitlines() if record.exists() else None
    pythonpath = (tmp_path / 'args.txt.pythonpath').read_text() \
        if argv is not None else None
    return result, argv, pythonpath


@pytest.fixture
def config(tmp_path):
    path = tmp_path / 'my config.py'  # a space in the name must survive
    path.write_text('model = dict()\n')
    return str(path)


def test_dist_train_defaults(config, tmp_path):
    result, argv, pythonpath = run_script(
        'dist_train.sh',
        [config, '2', '--work-dir', 'a dir', '--cfg-options', 'x=1', 'y=2'],
        tmp_path)
    assert result.returncode == 0, result.stderr
    assert argv == [
        '-m', 'torch.distributed.run', '--nnodes=1', '--node_rank=0',
        '--master_addr=127.0.0.1', '--nproc_per_node=2',
        '--master_port=29500',
        osp.join(TOOLS, 'train.py'), config, '--launcher', 'pytorch',
        '--work-dir', 'a dir', '--cfg-options', 'x=1', 'y=2'
    ]
    # the repository comes first on the path, nothing else is added
    assert pythonpath == ROOT


def test_dist_train_environment(config, tmp_path):
    result, argv, pythonpath = run_script(
        'dist_train.sh', [config, '4'],
        tmp_path,
        NNODES='2',
        NODE_RANK='1',
        MASTER_ADDR='10.1.2.3',
        PORT='31337',
        PYTHONPATH='/elsewhere')
    assert result.returncode == 0, result.stderr
    assert argv[:7] == [
        '-m', 'torch.distributed.run', '--nnodes=2', '--node_rank=1',
        '--master_addr=10.1.2.3', '--nproc_per_node=4', '--master_port=31337'
    ]
    assert argv[7:] == [
        osp.join(TOOLS, 'train.py'), config, '--launcher', 'pytorch'
    ]
    assert pythonpath == f'{ROOT}:/elsewhere'


def test_dist_test_arguments(config, tmp_path):
    result, argv, _ = run_script(
        'dist_test.sh', [config, 'ckpt.pth', '3', '--out', 'r.pkl'],
        tmp_path,
        PORT='29999')
    assert result.returncode == 0, result.stderr
    assert argv == [
        '-m', 'torch.distributed.run', '--nnodes=1', '--node_rank=0',
        '--master_addr=127.0.0.1', '--nproc_per_node=3',
        '--master_port=29999',
        osp.join(TOOLS, 'test.py'), config, 'ckpt.pth', '--launcher',
        'pytorch', '--out', 'r.pkl'
    ]


@pytest.mark.parametrize('script,args', [
    ('dist_train.sh', []),
    ('dist_train.sh', ['CONFIG']),
    ('dist_test.sh', ['CONFIG', 'CKPT']),
])
def test_usage_when_arguments_are_missing(script, args, tmp_path):
    result, argv, _ = run_script(script, args, tmp_path)
    assert result.returncode == 2
    assert 'usage:' in result.stderr
    assert argv is None  # nothing launched


@pytest.mark.parametrize('gpus', ['0', 'two', '-1', '2.5', ''])
def test_bad_process_count(gpus, config, tmp_path):
    result, argv, _ = run_script('dist_train.sh', [config, gpus], tmp_path)
    assert result.returncode == 2
    assert 'GPUS must be a positive number' in result.stderr
    assert argv is None


def test_missing_config(tmp_path):
    result, argv, _ = run_script('dist_train.sh',
                                 [str(tmp_path / 'nope.py'), '2'], tmp_path)
    assert result.returncode == 2
    assert 'does not exist' in result.stderr
    assert argv is None


def test_slurm_train_arguments(tmp_path):
    result, argv, pythonpath = run_script(
        'slurm_train.sh',
        ['part', 'job', 'cfg.py', 'work dir', '--amp'],
        tmp_path,
        GPUS='16',
        SRUN_ARGS='--qos=high --time=1:00:00')
    assert result.returncode == 0, result.stderr
    python = str(tmp_path / 'python')
    assert argv == [
        '-p', 'part', '--job-name=job', '--gres=gpu:8', '--ntasks=16',
        '--ntasks-per-node=8', '--cpus-per-task=5', '--kill-on-bad-exit=1',
        '--qos=high', '--time=1:00:00', python, '-u',
        osp.join(TOOLS, 'train.py'), 'cfg.py', '--work-dir=work dir',
        '--launcher=slurm', '--amp'
    ]
    assert pythonpath == ROOT


def test_slurm_test_arguments_cpu_partition(tmp_path):
    result, argv, _ = run_script(
        'slurm_test.sh', ['part', 'job', 'cfg.py', 'c.pth', '--out', 'r.pkl'],
        tmp_path,
        GPUS='2',
        GPUS_PER_NODE='2',
        GRES='')
    assert result.returncode == 0, result.stderr
    assert argv == [
        '-p', 'part', '--job-name=job', '--ntasks=2', '--ntasks-per-node=2',
        '--cpus-per-task=5', '--kill-on-bad-exit=1',
        str(tmp_path / 'python'), '-u',
        osp.join(TOOLS, 'test.py'), 'cfg.py', 'c.pth', '--launcher=slurm',
        '--out', 'r.pkl'
    ]


@pytest.mark.parametrize('script', ['slurm_train.sh', 'slurm_test.sh'])
def test_slurm_usage(script, tmp_path):
    result, argv, _ = run_script(script, ['part', 'job', 'cfg.py'], tmp_path)
    assert result.returncode == 2
    assert 'usage:' in result.stderr
    assert argv is None
