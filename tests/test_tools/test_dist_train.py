"""tools/dist_train.sh CONFIG 2 on this CPU machine: two processes over gloo
train a shrunken shipped config; both finish, losses are logged once, the
student export is written once, and both processes end with the same student
weights (each writes its hash through tools_support.StudentWeightProbe)."""
import glob
import json
import os
import os.path as osp
import re
import time

import pytest
import torch
from conftest import run_tool
from tools_support import (PROBE, free_port, state_sha256, tool_env,
                           write_tiny_config)

pytestmark = pytest.mark.slow

EPOCHS, ITERS_PER_EPOCH = 2, 2  # detection: 8 images, 2 processes x 2
BN_BUFFERS = ('running_mean', 'running_var', 'num_batches_tracked')


def load(path):
    return torch.load(path, map_location='cpu', weights_only=True)


@pytest.mark.parametrize('name', ['retinanet', 'pspnet'])
def test_two_cpu_processes(name, tmp_path):
    kind_det = name == 'retinanet'
    config = write_tiny_config(
        name,
        str(tmp_path),
        length=EPOCHS if kind_det else 4,
        checkpoint_interval=None if kind_det else 2)
    work_dir = str(tmp_path / 'work')
    start = time.time()
    result = run_tool(
        ['bash', 'tools/dist_train.sh', config, '2', '--work-dir', work_dir],
        env=tool_env(port=free_port()))
    elapsed = time.time() - start
    log = result.stdout
    print(f'{name}: 2 processes trained in {elapsed:.1f} s')

    # both processes ran to the end, in one gloo process group of 2, with
    # DDP and no search for unused parameters
    records = []
    for rank in (0, 1):
        with open(osp.join(work_dir, PROBE.format(rank=rank))) as f:
            records.append(json.load(f))
    iters = EPOCHS * ITERS_PER_EPOCH if kind_det else 4
    for rank, record in enumerate(records):
        assert record['rank'] == rank
        assert record['world_size'] == 2
        assert record['iter'] == iters
        assert record['wrapper'] == 'MMDistributedDataParallel'
        assert record['backend'] == 'gloo'
        assert record['find_unused_parameters'] is False

    # identical student (parameters and buffers) and connectors on both
    assert records[0]['params'] == records[1]['params']
    assert records[0]['state'] == records[1]['state']
    assert records[0]['connectors'] == records[1]['connectors']

    # losses logged once per iteration, by rank 0 only: on the console and
    # in the single log folder
    pattern = (r'Epoch\(train\)\s+\[\d+\]\[\d+/\d+\]'
               if kind_det else r'Iter\(train\)\s+\[\d+/\d+\]')
    lines = [line for line in log.splitlines() if re.search(pattern, line)]
    assert len(lines) == iters, lines
    assert all('loss_distill_' in line for line in lines)
    log_dirs = [d for d in os.listdir(work_dir)
                if osp.isdir(osp.join(work_dir, d))]
    assert len(log_dirs) == 1, log_dirs
    log_files = glob.glob(osp.join(work_dir, log_dirs[0], '*.log'))
    assert len(log_files) == 1
    with open(log_files[0]) as f:
        assert len([line for line in f if re.search(pattern, line)]) == iters

    # the student exports: once per checkpoint, no "-1" duplicates, one
    # student config; the last one is the weights both processes hold
    unit = 'epoch' if kind_det else 'iter'
    steps = list(range(1, EPOCHS + 1)) if kind_det else [2, 4]
    expected = {'student_config.py'}
    for step in steps:
        expected |= {f'{unit}_{step}.pth', f'{unit}_{step}_student.pth'}
    files = {f for f in os.listdir(work_dir) if f.endswith(('.pth', '.py'))}
    assert files == expected | {osp.basename(config)}, sorted(files)
    assert log.count('Student-only checkpoint saved') == len(steps)
    last = load(osp.join(work_dir, f'{unit}_{steps[-1]}_student.pth'))
    params = {k: v for k, v in last['state_dict'].items()
              if not k.endswith(BN_BUFFERS)}
    assert state_sha256(params) == records[0]['params']
    if kind_det:  # frozen BN (norm_eval): the whole state is the same
        assert state_sha256(last['state_dict']) == records[0]['state']
    # PSPNet's SyncBN runs as BN in CPU processes: the checkpoint of the last
    # iteration holds rank 0's running statistics, SyncBuffersHook averages
    # them on every rank before the validation that follows (above: the
    # processes' states are equal).
    # the weights did train between the two checkpoints
    first = load(osp.join(work_dir, f'{unit}_{steps[0]}_student.pth'))
    assert state_sha256(first['state_dict']) != records[0]['state']
