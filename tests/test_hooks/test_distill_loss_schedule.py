"""DistillLossScheduleHook: the schedule's values, and its effect on the
distillation losses and on the teacher in the real Runner."""
import math

import pytest
from mmengine.hooks import Hook
from mmengine.runner import Runner

from mmdistill.hooks import DistillLossScheduleHook


def test_warmup_decay_and_stop_values():
    hook = DistillLossScheduleHook(warmup=4, start=0.2, decay_begin=10,
                                   decay_end=20, decay_to=0.1, stop=25)
    expected = {0: 0.2, 1: 0.4, 2: 0.6, 3: 0.8, 4: 1.0, 9: 1.0, 10: 1.0,
                15: 0.55, 20: 0.1, 24: 0.1, 25: 0.0, 100: 0.0}
    for t, value in expected.items():
        assert hook.factor(t) == pytest.approx(value), t
    cosine = DistillLossScheduleHook(decay_begin=0, decay_end=8,
                                     decay='cosine')
    for t in range(10):
        p = min(t, 8) / 8
        assert cosine.factor(t) == pytest.approx(
            (1 + math.cos(math.pi * p)) / 2), t
    assert DistillLossScheduleHook().factor(12345) == 1.0


@pytest.mark.parametrize('kwargs,match', [
    (dict(warmup=-1), 'warmup'),
    (dict(decay_begin=5), 'go together'),
    (dict(decay_begin=5, decay_end=5), 'after decay_begin'),
    (dict(decay_begin=0, decay_end=5, decay='exp'), "'linear' or 'cosine'"),
    (dict(stop=-2), 'stop'),
    (dict(warmup=5, start=-0.5), 'start must be >= 0'),
    (dict(decay_begin=0, decay_end=5, decay_to=-1), 'decay_to must be'),
])
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        DistillLossScheduleHook(**kwargs)


class Recorder(Hook):
    """Per iteration: the logged distillation loss, the unscaled loss seen
    by FeatureStatsHook, the factor, and the teacher's forward calls."""
    priority = 'LOWEST'

    def __init__(self):
        self.rows = []
        self.teacher_calls = 0

    def before_train(self, runner):
        def count(module, args):
            self.teacher_calls += 1
        runner.model.teacher.register_forward_pre_hook(count)
        self.grads = []
        for p in runner.model.connectors.parameters():
            p.register_hook(
                lambda g: self.grads.append(float(g.abs().sum())))

    def after_train_iter(self, runner, batch_idx, data_batch=None,
                         outputs=None):
        model = runner.model
        stats = model.controls.feature_stats.get('stage4', {})
        self.rows.append(dict(
            logged=float(outputs['loss_distill_stage4'].detach()),
            unscaled=stats.get('loss'),
            factor=runner.message_hub.get_scalar(
                'train/distill_factor').current(),
            teacher_calls=self.teacher_calls,
            connector_grads=self.grads))
        self.grads = []


def test_schedule_in_the_runner(tiny_cfg):
    cfg, _ = tiny_cfg('pspnet', iters=5)
    cfg.custom_hooks = [
        dict(type='mmdistill.DistillLossScheduleHook', warmup=2, stop=4),
        dict(type='mmdistill.FeatureStatsHook', interval=1, log=False),
    ]
    runner = Runner.from_cfg(cfg)
    recorder = Recorder()
    runner.register_hook(recorder)
    runner.train()
    rows = recorder.rows
    assert [r['factor'] for r in rows] == [0.0, 0.5, 1.0, 1.0, 0.0]
    for r in rows[1:4]:
        assert r['unscaled'] > 0
        assert r['logged'] == pytest.approx(r['factor'] * r['unscaled'],
                                            rel=1e-5)
    # at factor 0 (the warm-up's start, and from the stop on) the teacher
    # does not run, the loss is an exact 0, and the connector still gets a
    # (zero) gradient for DDP
    assert [r['teacher_calls'] for r in rows] == [0, 1, 2, 3, 3]
    assert rows[0]['logged'] == rows[4]['logged'] == 0.0
    assert rows[0]['unscaled'] is None
    count = len(list(runner.model.connectors.parameters()))
    assert len(rows[4]['connector_grads']) == count
    assert rows[4]['connector_grads'] == [0.0] * count
    assert sum(rows[2]['connector_grads']) > 0


def test_unknown_pair_and_non_distiller_models(tiny_cfg):
    cfg, _ = tiny_cfg('pspnet', iters=1)
    cfg.custom_hooks = [
        dict(type='mmdistill.DistillLossScheduleHook', pairs=['stage3'])]
    runner = Runner.from_cfg(cfg)
    with pytest.raises(KeyError, match=r"no distillation pair 'stage3'.*"
                       r"stage4"):
        runner.train()

    cfg, _ = tiny_cfg('pspnet', iters=1)
    cfg.model = cfg.model.student
    cfg.custom_hooks = [dict(type='mmdistill.DistillLossScheduleHook')]
    runner = Runner.from_cfg(cfg)
    with pytest.raises(TypeError, match='SingleTeacherDistiller'):
        runner.train()


def test_by_epoch_needs_an_epoch_loop(tiny_cfg):
    cfg, _ = tiny_cfg('pspnet', iters=1)
    cfg.custom_hooks = [dict(type='mmdistill.DistillLossScheduleHook',
                             warmup=1, by_epoch=True)]
    runner = Runner.from_cfg(cfg)
    with pytest.raises(ValueError, match='IterBasedTrainLoop'):
        runner.train()


def test_by_epoch_in_an_epoch_loop_and_pair_groups(tiny_cfg):
    """RetinaNet's 5 FPN pairs come from one ``fpn_{0-4}`` entry; naming
    the entry schedules all five, per epoch."""
    cfg, _ = tiny_cfg('retinanet', epochs=2)
    cfg.custom_hooks = [dict(type='mmdistill.DistillLossScheduleHook',
                             warmup=2, start=0.5, by_epoch=True,
                             pairs=['fpn'])]
    runner = Runner.from_cfg(cfg)
    factors = []

    class Spy(Hook):
        priority = 'LOWEST'

        def after_train_iter(self, runner, batch_idx, data_batch=None,
                             outputs=None):
            factors.append(dict(runner.model.controls.loss_scales))

    runner.register_hook(Spy())
    runner.train()
    groups = runner.model.pair_groups
    assert groups['fpn'] == [f'fpn_{i}' for i in range(5)]
    first, last = factors[0], factors[-1]
    assert first == {f'fpn_{i}': 0.5 for i in range(5)}
    assert last == {f'fpn_{i}': 0.75 for i in range(5)}


def test_one_schedule_per_pair_and_a_factor_per_hook(tiny_cfg):
    """Two hooks that schedule the same pair stop before training; hooks
    on separate pairs each log their own factor."""
    cfg, _ = tiny_cfg('retinanet', epochs=1)
    cfg.custom_hooks = [
        dict(type='mmdistill.DistillLossScheduleHook', stop=1,
             pairs=['fpn_0']),
        dict(type='mmdistill.DistillLossScheduleHook', warmup=2)]
    runner = Runner.from_cfg(cfg)
    with pytest.raises(ValueError, match=r"Two DistillLossScheduleHooks "
                       r"schedule the pairs \['fpn_0'\]"):
        runner.train()
    assert runner.iter == 0

    cfg, _ = tiny_cfg('retinanet', epochs=1)
    cfg.custom_hooks = [
        dict(type='mmdistill.DistillLossScheduleHook', stop=0,
             pairs=['fpn_0']),
        dict(type='mmdistill.DistillLossScheduleHook', warmup=2,
             pairs=['fpn_1', 'fpn_2'])]
    runner = Runner.from_cfg(cfg)
    runner.train()
    hub, scales = runner.message_hub, runner.model.controls.loss_scales
    assert set(scales) == {'fpn_0', 'fpn_1', 'fpn_2'}
    assert hub.get_scalar('train/distill_factor_fpn_0').current() == \
        scales['fpn_0'] == 0.0
    warmup = hub.get_scalar('train/distill_factor_fpn_1_fpn_2').current()
    assert warmup == scales['fpn_1'] == scales['fpn_2']
    assert 0.0 <= warmup < 1.0
    assert 'train/distill_factor' not in hub.log_scalars


def test_a_later_runner_on_the_same_model_may_schedule_again():
    """The pairs a hook scheduled stay its own only while that hook runs:
    another Runner (with its own hooks) around the same model is free to
    schedule them."""
    from types import SimpleNamespace

    from mmdistill.distillers import SingleTeacherDistiller
    from mmdistill.distillers.controls import DistillControls
    from mmdistill.hooks import DistillLossScheduleHook
    model = SingleTeacherDistiller.__new__(SingleTeacherDistiller)
    for key, value in dict(
            pairs=dict(fpn_0=0, fpn_1=0),
            pair_groups=dict(fpn=['fpn_0', 'fpn_1']),
            controls=DistillControls(['fpn_0', 'fpn_1'])).items():
        object.__setattr__(model, key, value)
    first = DistillLossScheduleHook(warmup=10)
    runner = SimpleNamespace(model=model, train_loop=None, hooks=[first])
    first.before_train(runner)
    first.before_train(runner)  # runner.train() again
    second = DistillLossScheduleHook(decay_begin=0, decay_end=10)
    second.before_train(SimpleNamespace(model=model, train_loop=None,
                                        hooks=[second]))
    clash = DistillLossScheduleHook(stop=5, pairs=['fpn'])
    with pytest.raises(ValueError, match='Two DistillLossScheduleHooks'):
        clash.before_train(SimpleNamespace(model=model, train_loop=None,
                                           hooks=[second, clash]))
