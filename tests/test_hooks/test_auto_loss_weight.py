"""AutoLossWeightHook: loss_weight='auto' measured in the real Runner,
written into the dumped config, restored on resume."""
import os.path as osp

import pytest
from mmengine.config import Config
from mmengine.hooks import Hook
from mmengine.runner import Runner

from mmdistill.hooks import AutoLossWeightHook


class Spy(Hook):
    priority = 'LOWEST'

    def __init__(self):
        self.rows = []

    def after_train_iter(self, runner, batch_idx, data_batch=None,
                         outputs=None):
        self.rows.append({k: float(v) for k, v in outputs.items()})


def auto_cfg(tiny_cfg, work_dir=None, iters=4):
    cfg, _ = tiny_cfg('pspnet', work_dir=work_dir, iters=iters)
    cfg.model.distill.stage4.loss.loss_weight = 'auto'
    cfg.default_hooks.checkpoint.interval = 2
    cfg.randomness = dict(seed=0)
    cfg.custom_hooks = [dict(type='mmdistill.AutoLossWeightHook',
                             target_ratio=0.5, warmup_iters=2)]
    return cfg


def test_weight_measured_frozen_dumped_and_resumed(tiny_cfg, tmp_path):
    work = str(tmp_path / 'auto')
    cfg = auto_cfg(tiny_cfg, work)
    runner = Runner.from_cfg(cfg)
    spy = Spy()
    runner.register_hook(spy)
    runner.train()
    rows = spy.rows
    # measured over iterations 0 and 1: logged raw, nothing optimised
    for row in rows[:2]:
        assert row['loss_distill_stage4'] == 0.0
        assert row['distill_raw_stage4'] > 0
    task = [sum(v for k, v in r.items() if 'loss' in k and k != 'loss'
                and not k.startswith('loss_distill_')) for r in rows[:2]]
    raw = [r['distill_raw_stage4'] for r in rows[:2]]
    expected = 0.5 * (sum(task) / 2) / (sum(raw) / 2)
    weight = runner.model.controls.loss_weights['stage4']
    assert weight == pytest.approx(expected, rel=1e-6)
    for row in rows[2:]:
        assert 'distill_raw_stage4' not in row
        assert row['loss_distill_stage4'] > 0
    # nor logged any more (the message hub would repeat the last value)
    assert 'train/distill_raw_stage4' not in runner.message_hub.log_scalars
    # the dumped config holds the number: the run can be repeated exactly
    dumped_path = osp.join(work, osp.basename(cfg.filename))
    dumped = Config.fromfile(dumped_path)
    assert dumped.custom_hooks[0]['weights'] == {'stage4': weight}
    log = open(osp.join(runner.log_dir, f'{runner.timestamp}.log')).read()
    assert 'stage4: loss_weight=' in log

    # rerun as it was dumped: the same warm-up, then the same weight, the
    # same losses at every iteration (it measures again, and keeps the
    # dumped weight)
    dumped.work_dir = str(tmp_path / 'rerun')
    rerun = Runner.from_cfg(dumped)
    spy_rerun = Spy()
    rerun.register_hook(spy_rerun)
    rerun.train()
    assert rerun.model.controls.loss_weights['stage4'] == weight
    assert spy_rerun.rows == rows
    log = open(osp.join(rerun.log_dir, f'{rerun.timestamp}.log')).read()
    assert ('warm-up, the weights the config gives (weights=..., set by an '
            'earlier run): stage4: loss_weight=') in log
    assert 'student loss averaged' not in log  # it measured none

    # resumed from iteration 2: the weight is restored, not measured again
    cfg2 = auto_cfg(tiny_cfg, str(tmp_path / 'resumed'), iters=4)
    cfg2.resume = True
    cfg2.load_from = osp.join(work, 'iter_2.pth')
    runner2 = Runner.from_cfg(cfg2)
    spy2 = Spy()
    runner2.register_hook(spy2)
    runner2.train()
    assert runner2.model.controls.loss_weights['stage4'] == weight
    assert len(spy2.rows) == 2
    assert all('distill_raw_stage4' not in r for r in spy2.rows)
    assert 'train/distill_raw_stage4' not in runner2.message_hub.log_scalars


def test_needs_an_auto_pair_and_good_arguments(tiny_cfg):
    cfg, _ = tiny_cfg('pspnet', iters=1)
    cfg.custom_hooks = [dict(type='mmdistill.AutoLossWeightHook')]
    runner = Runner.from_cfg(cfg)
    with pytest.raises(ValueError, match="no distillation pair has "
                       "loss_weight='auto'"):
        runner.train()
    with pytest.raises(ValueError, match='target_ratio'):
        AutoLossWeightHook(target_ratio=0)
    with pytest.raises(ValueError, match='warmup_iters'):
        AutoLossWeightHook(warmup_iters=0)
    with pytest.raises(ValueError, match=r"weights\['stage4'\] must be a "
                       'number > 0, got 0'):
        AutoLossWeightHook(weights=dict(stage4=0))


def test_weights_name_auto_pairs(tiny_cfg):
    cfg = auto_cfg(tiny_cfg, iters=1)
    cfg.custom_hooks[0]['weights'] = dict(stage3=0.1)
    runner = Runner.from_cfg(cfg)
    with pytest.raises(ValueError, match=r"weights names \['stage3'\], "
                       r"which are not pairs with loss_weight='auto' \(those"
                       r" are \['stage4'\]\)"):
        runner.train()


def test_a_warmup_as_long_as_the_run_stops_before_training(tiny_cfg):
    """The 'auto' pairs would never distill, with nothing said."""
    cfg = auto_cfg(tiny_cfg, iters=2)
    runner = Runner.from_cfg(cfg)
    with pytest.raises(ValueError, match=r'warmup_iters=2 measures .* the '
                       r'run has only 2 \(max_iters\): those pairs would '
                       'never distill'):
        runner.train()
    assert runner.iter == 0


def test_auto_weight_without_the_hook_stops(tiny_cfg):
    """Nothing would ever set the weight: the pair would silently add
    nothing for the whole run."""
    cfg = auto_cfg(tiny_cfg, iters=1)
    cfg.custom_hooks = []
    runner = Runner.from_cfg(cfg)
    with pytest.raises(ValueError, match=r"The pairs \['stage4'\] have "
                       "loss_weight='auto', which AutoLossWeightHook sets, "
                       'and no such hook runs: add'):
        runner.train()
    assert runner.iter == 0


def test_weights_written_for_a_hook_given_by_its_class(monkeypatch):
    """Pure-Python (lazy) configs name the hook by its class."""
    from types import SimpleNamespace

    from mmdistill.hooks import auto_loss_weight
    monkeypatch.setattr(auto_loss_weight, 'is_main_process', lambda: False)
    entry = dict(type=AutoLossWeightHook, warmup_iters=2)
    runner = SimpleNamespace(cfg=Config(dict(custom_hooks=[entry])),
                             logger=None)
    AutoLossWeightHook()._write_config(runner, dict(stage4=0.5))
    assert runner.cfg.custom_hooks[0]['weights'] == dict(stage4=0.5)
