"""FeatureStatsHook and the statistics it logs."""
import json
import os.path as osp

import numpy as np
import pytest
import torch
from mmengine.runner import Runner

from mmdistill.hooks.feature_stats import feature_stats
from mmdistill.hooks import FeatureStatsHook


def test_statistics_match_numpy():
    g = torch.Generator().manual_seed(0)
    raw = torch.randn(2, 3, 4, 4, generator=g)
    after = torch.randn(2, 3, 4, 4, generator=g)
    teacher = 2 * torch.randn(2, 3, 4, 4, generator=g)
    stats = feature_stats(
        dict(p=(raw, after, teacher, torch.tensor(0.25))))['p']
    r, a, t = raw.numpy(), after.numpy(), teacher.numpy()

    def cos(x, y):
        x, y = x.reshape(2, -1), y.reshape(2, -1)
        return np.mean((x * y).sum(1) / np.linalg.norm(x, axis=1) /
                       np.linalg.norm(y, axis=1))

    expected = dict(
        loss=0.25, student_mean=r.mean(), student_std=r.std(ddof=1),
        teacher_mean=t.mean(), teacher_std=t.std(ddof=1),
        mse_before_connector=((r - t)**2).mean(),
        cos_before_connector=cos(r, t),
        mse_after_connector=((a - t)**2).mean(),
        cos_after_connector=cos(a, t))
    assert set(stats) == set(expected)
    for key, value in expected.items():
        assert stats[key] == pytest.approx(float(value), rel=1e-5), key
    # a student with other channels than the teacher: no "before" entries
    stats = feature_stats(
        dict(p=(raw[:, :2], after, teacher, torch.tensor(1.0))))['p']
    assert 'mse_before_connector' not in stats
    assert 'mse_after_connector' in stats
    # a pair without a connector: its tap compared once, unsuffixed
    stats = feature_stats(
        dict(p=(raw, raw, teacher, torch.tensor(1.0))))['p']
    assert stats['mse'] == pytest.approx(float(((r - t)**2).mean()),
                                         rel=1e-5)
    assert stats['cos'] == pytest.approx(float(cos(r, t)), rel=1e-5)
    assert not [k for k in stats if k.endswith('_connector')]


def test_logged_to_the_visualiser_and_the_log(tiny_cfg):
    cfg, _ = tiny_cfg('pspnet', iters=5)
    cfg.custom_hooks = [dict(type='mmdistill.FeatureStatsHook', interval=2)]
    # mmseg's runtime names its visualizer 'visualizer': in a process that
    # ran other Runners that instance (and its save dir) would be reused
    cfg.visualizer.name = f'feature_stats_{id(cfg)}'
    runner = Runner.from_cfg(cfg)
    runner.train()
    scalars = osp.join(runner.log_dir, 'vis_data', 'scalars.json')
    rows = [json.loads(line) for line in open(scalars)]
    stat_rows = [r for r in rows if 'distill_stats/stage4/loss' in r]
    assert [r['step'] for r in stat_rows] == [2, 4]
    row = stat_rows[-1]
    # the MLP connector maps 64 student channels to the teacher's: the
    # "after" entries exist and the loss is the logged distillation loss's
    assert 'distill_stats/stage4/mse_after_connector' in row
    assert row['distill_stats/stage4/loss'] > 0
    log = open(osp.join(runner.log_dir, f'{runner.timestamp}.log')).read()
    assert 'distill stage4: loss:' in log
    # the runner's own header (mmseg: by iteration, aligned to max_iters)
    assert 'Iter(train) [4/5]  distill stage4: loss:' in log
    # only the collecting iterations compute statistics (the 5th does not)
    assert runner.model.controls.collect_stats is False


def test_interval_must_be_positive():
    with pytest.raises(ValueError, match='interval'):
        FeatureStatsHook(interval=0)


def test_statistics_computed_as_the_pair_runs(tiny_cfg):
    """With statistics asked for, the step keeps no feature map for them:
    each pair's statistics are 0-d tensors computed as it runs (here with
    the pair's ``with_cp``, whose connector output is not kept either),
    equal to those of its features."""
    import copy

    from mmengine.registry import MODELS, DefaultScope

    from mmdistill.testing import random_batch
    cfg, _ = tiny_cfg('pspnet')
    cfg.model.distill.stage4.with_cp = True
    with DefaultScope.overwrite_default_scope(cfg.default_scope):
        model = MODELS.build(copy.deepcopy(cfg.model))
    model.train()
    seen = []
    model.connectors.stage4.register_forward_hook(
        lambda module, args, output: seen.append((args[0], output)))
    data = model.data_preprocessor(
        random_batch('seg', (64, 64), 2, 19, seed=0), True)
    model.controls.collect_stats = True
    losses = model(data['inputs'], data['data_samples'], mode='loss')
    kept = model.controls.take_stats()['stage4']
    assert all(value.dim() == 0 for value in kept.values())
    raw, student = seen[0]  # the forward's, not the backward's re-run
    teacher = model.teacher_features(data['inputs'],
                                     data['data_samples'])['stage4']
    expected = feature_stats(dict(stage4=(
        raw, student, teacher, losses['loss_distill_stage4'])))['stage4']
    assert set(kept) == set(expected)
    for key, value in expected.items():
        assert kept[key].item() == pytest.approx(value, rel=1e-5), key


def test_teacher_runs_while_a_weight_is_measured():
    """A pair whose automatic weight is being measured needs its loss, and
    so the teacher, even when its schedule factor is 0."""
    from mmdistill.distillers.controls import DistillControls
    controls = DistillControls(['a', 'b'], auto_weight=['a'])
    controls.loss_scales.update(a=0.0, b=0.0)
    assert controls.teacher_needed
    controls.loss_weights['a'] = 2.0
    assert not controls.teacher_needed


def test_log_header_is_the_runners():
    """The header of mmengine's LogProcessor for a training line: by
    iteration (mmseg) or by epoch (mmdet, mmpretrain), aligned alike."""
    from types import SimpleNamespace

    from mmdistill.hooks.utils import train_log_header
    runner = SimpleNamespace(log_processor=SimpleNamespace(by_epoch=False),
                             iter=19, max_iters=80000)
    assert train_log_header(runner, 19) == 'Iter(train) [   20/80000]'
    runner = SimpleNamespace(log_processor=SimpleNamespace(by_epoch=True),
                             epoch=2, max_epochs=12, iter=1000,
                             train_dataloader=[None] * 7330)
    assert train_log_header(runner, 19) == 'Epoch(train)  [3][  20/7330]'
