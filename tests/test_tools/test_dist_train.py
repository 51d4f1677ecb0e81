"""tools/dist_train.sh CONFIG 2 on this CPU machine: two processes over gloo
train a shrunken shipped config; both finish, losses are logged once, the
student export is written once, and both processes end with the same student
weights (each writes its hash through tools_support.StudentWeightProbe).
PSPNet's SyncBN runs as BN in each process: every runner checkpoint and
export holds the running statistics both processes hold when it is saved.

Each run covers more than the basics, since every two-process run costs
about 25 s here:
- FGD RetinaNet where process 0 sees no ground-truth box at all (its
  images have none) finishes, in step (no hang);
- PSPNet with ``loss_weight='auto'``: each process measures its own
  batches, the sums are all-reduced, and both use the same weight."""
import glob
import json
import os
import os.path as osp
import re
import time

import pytest
from mmengine.config import Config
from tools_support import (BN_BUFFERS, BOXES, PROBE, free_port,
                           run_process_group, state_sha256, strip_boxes,
                           tool_env, write_tiny_config)

pytestmark = pytest.mark.slow

EPOCHS, ITERS_PER_EPOCH = 2, 2  # detection: 8 images, 2 processes x 2


def load(path):
    """Weights-only on every torch (torch 2.1's own weights-only reader does
    not know mmengine's HistoryBuffer)."""
    from mmdistill.utils.checkpoint import read_checkpoint
    return read_checkpoint(path)


def _fgd_without_boxes_on_process_0(tmp_path) -> str:
    """FGD RetinaNet; every image process 0 trains on has no ground-truth
    box (the sampler does not shuffle: process r takes images r, r + 2,
    ...)."""
    config = write_tiny_config(
        'fgd_retinanet', str(tmp_path), length=EPOCHS,
        hooks=[dict(type='GtBoxProbe')])
    removed = strip_boxes(
        str(tmp_path / 'fgd_retinanet_data'), 'train', lambda i: i % 2)
    assert removed > 0
    cfg = Config.fromfile(config)
    cfg.train_dataloader.sampler.shuffle = False
    cfg.dump(config)
    return config


def _pspnet_with_auto_weight(tmp_path) -> str:
    config = write_tiny_config(
        'pspnet', str(tmp_path), length=4, checkpoint_interval=2,
        hooks=[dict(type='mmdistill.AutoLossWeightHook', warmup_iters=2),
               dict(type='AutoWeightProbe')])
    cfg = Config.fromfile(config)
    cfg.model.distill.stage4.loss.loss_weight = 'auto'
    cfg.dump(config)
    return config


@pytest.mark.parametrize('name', ['fgd_retinanet', 'pspnet'])
def test_two_cpu_processes(name, tmp_path):
    kind_det = name == 'fgd_retinanet'
    config = (_fgd_without_boxes_on_process_0 if kind_det else
              _pspnet_with_auto_weight)(tmp_path)
    work_dir = str(tmp_path / 'work')
    start = time.time()
    code, log = run_process_group(
        ['bash', 'tools/dist_train.sh', config, '2', '--work-dir', work_dir],
        env=tool_env(port=free_port()), timeout=420)
    print(f'{name}: 2 processes trained in {time.time() - start:.1f} s')
    assert code is not None, f'the run hung (killed):\n{log[-4000:]}'
    assert code == 0, log[-6000:]

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
    # and what trains besides it (PSPNet's MLP connector, FGD's loss
    # modules)
    assert records[0]['distillation_tensors'] > 0
    assert records[0]['distillation'] == records[1]['distillation']

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
    # the whole state, BN statistics included: for PSPNet (SyncBN as BN in
    # each CPU process) the buffers are averaged before every checkpoint
    assert state_sha256(last['state_dict']) == records[0]['state']
    for step in steps:
        name = f'{unit}_{step}.pth'
        saved = load(osp.join(work_dir, name))
        runner_ckpt = saved['state_dict']
        # RNGStateHook: both processes' generator states, gathered before
        # the save (mmengine saves on rank 0 only)
        rng = saved['rng_state']
        assert rng['world_size'] == 2 and len(rng['ranks']) == 2
        export = load(osp.join(work_dir, f'{unit}_{step}_student.pth'))
        for state in (export['state_dict'], {
                k[len('student.'):]: v
                for k, v in runner_ckpt.items() if k.startswith('student.')
        }):
            buffers = {k: v for k, v in state.items()
                       if k.endswith(BN_BUFFERS)}
            assert buffers
            # what each process held in memory right after the save
            assert state_sha256(buffers) == records[0]['buffers'][name]
            assert state_sha256(buffers) == records[1]['buffers'][name]
    # the weights did train between the two checkpoints
    first = load(osp.join(work_dir, f'{unit}_{steps[0]}_student.pth'))
    assert state_sha256(first['state_dict']) != records[0]['state']

    if kind_det:  # process 0 saw no box, process 1 did
        seen = []
        for rank in (0, 1):
            with open(osp.join(work_dir, BOXES.format(rank=rank))) as f:
                seen.append(json.load(f))
        assert seen[0] == dict(images=4 * EPOCHS, boxes=0), seen
        assert seen[1]['images'] == 4 * EPOCHS and seen[1]['boxes'] > 0
        return
    # the automatic weight: the same on both processes, and dumped
    weights = []
    for rank in (0, 1):
        with open(osp.join(work_dir, f'auto_weights_rank{rank}.json')) as f:
            weights.append(json.load(f))
    assert weights[0]['stage4'] is not None and weights[0]['stage4'] > 0
    assert weights[0] == weights[1]
    dumped = Config.fromfile(osp.join(work_dir, 'pspnet.py'))
    hook, = [h for h in dumped.custom_hooks
             if h['type'] == 'mmdistill.AutoLossWeightHook']
    assert hook['weights']['stage4'] == pytest.approx(weights[0]['stage4'])
