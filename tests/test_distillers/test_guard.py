"""The distiller's guard against silent non-training (issue 10 item 2) and
its check after the update, off the forward (issue 11 item 2)."""
import copy
import os

import pytest
import torch
from mmengine.logging import MessageHub
from mmengine.optim import OptimWrapper
from mmengine.registry import MODELS as ROOT_MODELS
from mmengine.registry import DefaultScope
from mmengine.runner import Runner

from mmdistill.distillers.guard import DistillGuard, DistillGuardError


def build(cfg):
    with DefaultScope.overwrite_default_scope(cfg.get('default_scope')):
        return ROOT_MODELS.build(copy.deepcopy(cfg.model))


def seg_batch(seed=0, n=2, size=64):
    from mmseg.structures import SegDataSample
    from mmengine.structures import PixelData
    g = torch.Generator().manual_seed(seed)
    inputs, samples = [], []
    for _ in range(n):
        inputs.append(torch.randint(0, 255, (3, size, size), generator=g,
                                    dtype=torch.uint8))
        sample = SegDataSample(metainfo=dict(
            img_shape=(size, size), ori_shape=(size, size),
            pad_shape=(size, size)))
        sample.gt_sem_seg = PixelData(data=torch.randint(
            0, 19, (1, size, size), generator=g))
        samples.append(sample)
    return dict(inputs=inputs, data_samples=samples)


def wrapper_of(model, clip=None):
    params = [p for p in model.parameters() if p.requires_grad]
    return OptimWrapper(torch.optim.SGD(params, lr=1e-3),
                        clip_grad=clip)


@pytest.fixture
def pspnet(tiny_cfg):
    cfg, _ = tiny_cfg('pspnet')
    return cfg


# ----------------------------------------------------------- in the Runner
def run(cfg):
    # mmseg's runtime names its visualizer 'visualizer': a fresh name per run
    cfg.visualizer.name = f'guard_{id(cfg)}'
    runner = Runner.from_cfg(cfg)
    runner.train()
    return runner


def test_huge_weight_with_clip_grad_stops_before_a_checkpoint(pspnet):
    """Issue 10: loss_weight 1e30 with gradient clipping used to exit 0
    with an untrained student; now the first iteration stops, naming the
    pair and its weight."""
    cfg = pspnet
    cfg.model.distill.stage4.loss.loss_weight = 1e30
    cfg.optim_wrapper.clip_grad = dict(max_norm=10.)
    with pytest.raises(DistillGuardError) as err:
        run(cfg)
    message = str(err.value)
    assert 'loss_distill_stage4' in message
    assert 'distill.stage4.loss.loss_weight (now 1e+30)' in message
    assert "guard=dict(action='warn')" in message
    assert not [f for f in os.listdir(cfg.work_dir) if f.endswith('.pth')]


def test_non_finite_grad_norm_names_the_largest_term(pspnet):
    """With the ratio check off, the inf gradient norm mmengine logs under
    clip_grad stops the run."""
    cfg = pspnet
    cfg.model.distill.stage4.loss.loss_weight = 1e30
    cfg.model.guard = dict(max_loss_ratio=None)
    cfg.optim_wrapper.clip_grad = dict(max_norm=10.)
    with pytest.raises(DistillGuardError) as err:
        run(cfg)
    message = str(err.value)
    assert 'the gradient norm is inf' in message or \
        'the gradient norm is nan' in message
    assert 'largest distillation term is loss_distill_stage4' in message
    assert 'distill.stage4.loss.loss_weight' in message


def test_warn_only_logs_once_and_trains_on(pspnet):
    cfg = pspnet
    cfg.train_cfg.max_iters = 3
    cfg.model.distill.stage4.loss.loss_weight = 1e30
    cfg.model.guard = dict(action='warn')
    cfg.optim_wrapper.clip_grad = dict(max_norm=10.)
    with pytest.warns(UserWarning, match='loss_distill_stage4') as caught:
        runner = run(cfg)
    assert runner.iter == 3
    ours = [w for w in caught if 'Distillation may not train' in
            str(w.message)]
    # the ratio, the grad norm: each reported once over 3 iterations
    kinds = ' '.join(str(w.message) for w in ours)
    assert kinds.count('drowns the task') == 1
    assert len(ours) <= 2


def test_healthy_run_is_not_stopped(pspnet):
    cfg = pspnet
    cfg.optim_wrapper.clip_grad = dict(max_norm=10.)
    runner = run(cfg)
    assert runner.iter == cfg.train_cfg.max_iters
    assert runner.model.guard.steps == cfg.train_cfg.max_iters


# ------------------------------------------------- the model, no Runner
def test_teacher_nan_names_pair_and_side(pspnet):
    model = build(pspnet)
    model.train()
    with torch.no_grad():
        model.teacher.backbone.layer4[-1].conv2.weight.fill_(float('nan'))
    with pytest.raises(DistillGuardError) as err:
        model.train_step(seg_batch(), wrapper_of(model))
    message = str(err.value)
    assert 'loss_distill_stage4 is nan' in message
    assert 'teacher feature not finite' in message
    assert 'checkpoint fits its config' in message


def test_overflowing_loss_names_the_loss_weight(pspnet):
    model = build(pspnet)
    model.train()
    model.distill_losses['stage4'].loss_weight = float('inf')
    with pytest.raises(DistillGuardError) as err:
        model.train_step(seg_batch(), wrapper_of(model))
    message = str(err.value)
    assert 'loss_distill_stage4 is inf' in message
    assert 'features finite' in message
    assert 'distill.stage4.loss.loss_weight' in message


def test_student_side_when_its_own_losses_are_not_finite(pspnet):
    model = build(pspnet)
    model.train()
    with torch.no_grad():
        model.student.backbone.layer4[-1].conv2.weight.fill_(float('nan'))
    with pytest.raises(DistillGuardError) as err:
        model.train_step(seg_batch(), wrapper_of(model))
    message = str(err.value)
    assert 'loss_distill_stage4 is nan' in message
    assert "the student's own losses sum to nan" in message
    assert 'student side' in message


def test_nothing_is_read_back_before_the_update(pspnet, monkeypatch):
    """The forward and parse_losses record the guard's values without a
    host transfer; the one check runs in train_step after the update."""
    model = build(pspnet)
    model.train()
    data = model.data_preprocessor(seg_batch(), True)
    with torch.no_grad():  # the student's own syncs happen here, not ours
        model.student.loss(data['inputs'], data['data_samples'])
    calls = []
    for name in ('item', 'tolist', '__bool__', 'cpu', 'numpy'):
        original = getattr(torch.Tensor, name)

        def counted(self, *args, _name=name, _original=original, **kw):
            calls.append(_name)
            return _original(self, *args, **kw)

        monkeypatch.setattr(torch.Tensor, name, counted)
    losses = model.student.loss(data['inputs'], data['data_samples'])
    student_only = list(calls)
    calls.clear()
    losses = model.loss(data['inputs'], data['data_samples'])
    model.parse_losses(losses)
    assert len(calls) == len(student_only), (calls, student_only)
    assert model.guard.pending
    monkeypatch.undo()
    model.guard.check()  # reads the recorded values: finite, no problem
    assert not model.guard.pending


def test_checked_at_the_next_step_under_ddp(pspnet, tmp_path):
    """mmengine's DDP wrapper calls parse_losses but not the model's
    train_step: the guard checks at the start of the next forward."""
    import torch.distributed as dist
    from mmengine.model import (MMDistributedDataParallel,
                                revert_sync_batchnorm)
    model = revert_sync_batchnorm(build(pspnet))  # SyncBN needs a GPU
    model.train()
    model.distill_losses['stage4'].loss_weight = 1e30
    dist.init_process_group('gloo', init_method=f'file://{tmp_path}/pg',
                            rank=0, world_size=1)
    try:
        ddp = MMDistributedDataParallel(module=model)
        wrapper = wrapper_of(model)
        ddp.train_step(seg_batch(0), wrapper)  # not checked yet
        assert model.guard.pending
        with pytest.raises(DistillGuardError,
                           match='checked at the next iteration'):
            ddp.train_step(seg_batch(1), wrapper)
    finally:
        dist.destroy_process_group()


# ------------------------------------------------------ the guard alone
class FakeHub:
    """What the guard reads of mmengine's MessageHub."""

    def __init__(self):
        self.log_scalars = {}
        self.hub = MessageHub('guard_test_hub')

    def log_grad(self, value):
        self.hub.update_scalar('train/grad_norm', value)
        self.log_scalars = self.hub.log_scalars


def step(guard, task, distill, hub, amp=False):
    log_vars = {'loss': torch.tensor(task + distill),
                'decode.loss_ce': torch.tensor(task),
                'decode.acc_seg': torch.tensor(50.),
                'loss_distill_p': torch.tensor(distill)}
    guard.record(log_vars, ['loss_distill_p'], amp)
    return log_vars


def test_ratio_is_checked_in_the_first_iterations_only():
    hub = FakeHub()
    guard = DistillGuard(max_loss_ratio=100, check_iters=2)
    for _ in range(2):
        step(guard, 1., 50., hub)
        guard.check(hub)
    step(guard, 1., 1e6, hub)
    guard.check(hub)  # third iteration: the ratio is no longer checked
    guard = DistillGuard(max_loss_ratio=100, check_iters=2)
    step(guard, 1., 1e3, hub)
    with pytest.raises(DistillGuardError, match='1e\\+03 times'):
        guard.check(hub)
    # accuracy entries are not losses: 'decode.acc_seg' does not count
    guard = DistillGuard(max_loss_ratio=100)
    step(guard, 2., 150., hub)
    guard.check(hub)


def test_grad_norm_fresh_only_and_amp_patience():
    hub = FakeHub()
    hub.log_grad(float('inf'))  # logged before this guard's first record
    guard = DistillGuard(amp_patience=3)
    step(guard, 1., 1., hub)
    guard.check(hub)  # the stale inf is not this run's
    for i in range(2):
        step(guard, 1., 1., hub, amp=True)
        hub.log_grad(float('inf'))
        guard.check(hub)  # the loss scaler skips these steps
    step(guard, 1., 1., hub, amp=True)
    guard.check(hub)  # no new grad norm logged: nothing to count
    step(guard, 1., 1., hub, amp=True)
    hub.log_grad(float('inf'))
    with pytest.raises(DistillGuardError, match='3 consecutive'):
        guard.check(hub)
    guard = DistillGuard()
    step(guard, 1., 1., hub)
    hub.log_grad(2.0)
    guard.check(hub)
    step(guard, 1., 1., hub)
    hub.log_grad(float('nan'))
    with pytest.raises(DistillGuardError, match='gradient norm is nan'):
        guard.check(hub)


def test_off_and_bad_settings():
    hub = FakeHub()
    guard = DistillGuard(action='off')
    step(guard, 1., float('nan'), hub)
    guard.check(hub)
    assert not guard.pending
    with pytest.raises(ValueError, match="'stop'.*'warn'"):
        DistillGuard(action='raise')
    with pytest.raises(ValueError, match='unknown keys'):
        DistillGuard.build(dict(max_ratio=3))
    with pytest.raises(ValueError, match='max_loss_ratio'):
        DistillGuard(max_loss_ratio=-1)


def test_bad_guard_config_stops_at_build(pspnet):
    pspnet.model.guard = dict(action='never')
    with pytest.raises(ValueError, match='guard.action'):
        build(pspnet)


def test_guard_copies_without_pending_values(pspnet):
    model = build(pspnet)
    model.train()
    data = model.data_preprocessor(seg_batch(), True)
    model.parse_losses(model.loss(data['inputs'], data['data_samples']))
    assert model.guard.pending
    assert not copy.deepcopy(model.guard).pending
