"""RNGStateHook: the random generator states go into the runner checkpoint
(readable by the weights-only reader) and come back on resume, so a resumed
tiny PSPNet distillation (dropout in both heads, random resize / crop / flip
/ photometric distortion) ends with the uninterrupted run's weights."""
import logging
import os.path as osp
import random
import shutil
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from mmengine.logging import MMLogger
from mmengine.runner import Runner

from mmdistill.hooks import RNGStateHook, get_rng_state, set_rng_state
from mmdistill.hooks.rng_state import RNG_KEY
from mmdistill.utils.checkpoint import read_checkpoint


def draws():
    return (random.random(), random.gauss(0, 1), np.random.rand(),
            np.random.randn(), torch.rand(3).tolist())


def test_states_survive_the_weights_only_reader(tmp_path):
    random.gauss(0, 1)  # python and numpy keep a cached gaussian
    np.random.randn()
    state = get_rng_state()
    assert state['python']['gauss_next'] is not None
    assert state['numpy']['has_gauss'] == 1
    expected = draws()
    path = str(tmp_path / 'iter_1.pth')
    torch.save({'state_dict': {}, RNG_KEY: dict(world_size=1,
                                                ranks=[state])}, path)
    loaded = read_checkpoint(path)[RNG_KEY]['ranks'][0]
    draws()  # move every generator on
    assert set_rng_state(loaded) == []
    assert draws() == expected


def fake_runner(iteration, epoch=0, loop=None):
    return SimpleNamespace(
        iter=iteration, epoch=epoch,
        train_loop=loop or SimpleNamespace())


def test_nothing_restored_for_load_from_or_other_world_size(monkeypatch):
    restored = []
    monkeypatch.setattr('mmdistill.hooks.rng_state.set_rng_state',
                        restored.append)
    checkpoint = {'meta': dict(iter=4, epoch=0),
                  RNG_KEY: dict(world_size=1, ranks=[get_rng_state()])}
    hook = RNGStateHook()
    # load_from: the run starts at iteration 0, not where the file was saved
    hook.after_load_checkpoint(None, checkpoint)
    hook.before_train_epoch(fake_runner(0))
    assert restored == []
    # states of 2 processes are not put into a 1-process run
    two = dict(checkpoint, **{RNG_KEY: dict(world_size=2, ranks=[{}, {}])})
    hook.after_load_checkpoint(None, two)
    logger = MMLogger.get_current_instance()
    messages = []
    handler = logging.Handler()
    handler.emit = lambda record: messages.append(record.getMessage())
    logger.addHandler(handler)
    try:
        hook.before_train_epoch(fake_runner(4))
    finally:
        logger.removeHandler(handler)
    assert restored == []
    assert any('2 process(es)' in m and 'not restored' in m
               for m in messages), messages
    # an epoch-based resume restores at once (the dataloader starts next)
    hook.after_load_checkpoint(None, checkpoint)
    hook.before_train_epoch(fake_runner(4))
    assert len(restored) == 1


def train(cfg, work_dir, rng_hook=True, resume_from=None):
    """Train ``cfg`` in ``work_dir`` (resuming from a copy of
    ``resume_from``); return the student's final state."""
    cfg = cfg.copy()
    cfg.work_dir = work_dir
    cfg.experiment_name = osp.basename(work_dir)
    if not rng_hook:
        cfg.default_hooks.pop('rng_state')
    if resume_from is not None:
        shutil.copy(resume_from, work_dir)
        cfg.resume = True
        cfg.load_from = osp.join(work_dir, osp.basename(resume_from))
    runner = Runner.from_cfg(cfg)
    runner.train()
    return {k: v.clone() for k, v in runner.model.student.state_dict().items()}


def same(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.slow
def test_resume_in_the_runner_is_bit_identical(tiny_cfg, tmp_path):
    cfg, _ = tiny_cfg('pspnet', iters=4)
    assert cfg.default_hooks.rng_state.type == 'mmdistill.RNGStateHook'
    cfg.randomness = dict(seed=0)
    cfg.train_cfg.val_interval = 2
    # save_best re-saves iter_2.pth during the validation that follows it:
    # its states must be those from before the validation
    cfg.default_hooks.checkpoint.update(
        interval=2, save_best='mIoU', rule='greater')
    # stock PSPNet: dropout before both classifiers
    assert cfg.model.student.decode_head.dropout_ratio > 0
    assert cfg.model.student.auxiliary_head.dropout_ratio > 0
    for rng_hook in (True, False):
        tag = 'hook' if rng_hook else 'plain'
        full_dir = tmp_path / f'full_{tag}'
        full_dir.mkdir()
        full = train(cfg, str(full_dir), rng_hook)
        resumed_dir = tmp_path / f'resumed_{tag}'
        resumed_dir.mkdir()
        resumed = train(cfg, str(resumed_dir), rng_hook,
                        resume_from=str(full_dir / 'iter_2.pth'))
        saved = torch.load(str(full_dir / 'iter_2.pth'), weights_only=False)
        if rng_hook:
            assert saved[RNG_KEY]['world_size'] == 1
            assert same(full, resumed)
        else:
            # without the hook the dropout masks and augmentation differ:
            # the comparison above can fail
            assert RNG_KEY not in saved
            assert not same(full, resumed)
