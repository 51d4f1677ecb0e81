"""kill -9 and ``tools/train.py --resume``: a tiny PSPNet distillation
(dropout in both heads, random resize / crop / flip / photometric
distortion, ``num_workers=0``) killed right after ``iter_2.pth`` was written
and before its student export, then resumed, ends with the weights of an
uninterrupted run, bit for bit; the export of ``iter_2.pth`` is written on
resume and ``max_keep_ckpts`` takes the exports with their checkpoints."""
import json
import os
import os.path as osp
import signal
import sys

import pytest
import torch
from conftest import run_tool
from mmengine.config import Config
from tools_support import (KILL_AFTER_ITER, PROBE, state_sha256, tool_env,
                           write_tiny_config)

pytestmark = pytest.mark.slow

ITERS, KILL_AT = 4, 2


def load(path):
    return torch.load(path, map_location='cpu', weights_only=False)


def tensors(obj, prefix=''):
    """The tensors of a nested checkpoint entry, by their path."""
    if isinstance(obj, torch.Tensor):
        return {prefix: obj}
    found = {}
    items = obj.items() if isinstance(obj, dict) else enumerate(obj) \
        if isinstance(obj, (list, tuple)) else ()
    for key, value in items:
        found.update(tensors(value, f'{prefix}/{key}'))
    return found


def test_killed_and_resumed_run_equals_uninterrupted_run(tmp_path):
    config = write_tiny_config(
        'pspnet', str(tmp_path), length=ITERS, checkpoint_interval=2,
        hooks=[dict(type='KillAfterCheckpoint')])
    cfg = Config.fromfile(config)
    assert cfg.model.student.decode_head.dropout_ratio > 0
    assert cfg.train_dataloader.num_workers == 0
    assert cfg.default_hooks.rng_state.type == 'mmdistill.RNGStateHook'
    cfg.default_hooks.checkpoint.max_keep_ckpts = 1
    # validate after iterations 2 and 4: the kill at 2 falls between the
    # checkpoint and the validation that follows it
    cfg.train_cfg.val_interval = 2
    cfg.dump(config)

    full = str(tmp_path / 'full')
    run_tool([sys.executable, 'tools/train.py', config, '--work-dir', full])

    killed = str(tmp_path / 'killed')
    env = tool_env()
    env[KILL_AFTER_ITER] = str(KILL_AT)
    result = run_tool(
        [sys.executable, 'tools/train.py', config, '--work-dir', killed],
        env=env, check=False)
    assert result.returncode == -signal.SIGKILL, result.stdout[-3000:]
    files = set(os.listdir(killed))
    assert 'iter_2.pth' in files
    assert 'iter_2_student.pth' not in files  # killed before the export
    assert not osp.exists(osp.join(killed, PROBE.format(rank=0)))

    resumed = run_tool([
        sys.executable, 'tools/train.py', config, '--work-dir', killed,
        '--resume'
    ])
    log = resumed.stdout
    assert 'Iter(train) [3/4]' in log and 'Iter(train) [2/4]' not in log
    assert 'random generator states restored' in log
    assert 'missing for the existing iter_2.pth' in log

    # the students in memory at the end: parameters and buffers
    probes = []
    for work_dir in (full, killed):
        with open(osp.join(work_dir, PROBE.format(rank=0))) as f:
            probes.append(json.load(f))
    assert probes[0]['iter'] == probes[1]['iter'] == ITERS
    assert probes[0]['params'] == probes[1]['params']
    assert probes[0]['state'] == probes[1]['state']
    assert probes[0]['connectors'] == probes[1]['connectors']

    # the same files: iter_2 and its export (written on resume) went with
    # max_keep_ckpts, also in the resumed run whose first process wrote
    # the checkpoint
    pth = {d: sorted(f for f in os.listdir(d) if f.endswith('.pth'))
           for d in (full, killed)}
    assert pth[full] == pth[killed] == ['iter_4.pth', 'iter_4_student.pth']
    # identical runner checkpoints (weights, optimizer) and exports
    for name in ('iter_4', ):
        a, b = (load(osp.join(d, f'{name}.pth')) for d in (full, killed))
        assert state_sha256(a['state_dict']) == state_sha256(b['state_dict'])
        optimizer = [tensors(c['optimizer']['state']) for c in (a, b)]
        assert optimizer[0] and state_sha256(optimizer[0]) == state_sha256(
            optimizer[1])
        assert a['optimizer']['param_groups'] == b['optimizer'][
            'param_groups']
        assert a['meta']['iter'] == b['meta']['iter']
        a, b = (load(osp.join(d, f'{name}_student.pth'))
                for d in (full, killed))
        assert state_sha256(a['state_dict']) == state_sha256(b['state_dict'])
        assert a['meta']['iter'] == b['meta']['iter'] == int(name[5:])
    assert state_sha256(a['state_dict']) == probes[0]['state']
