"""StudentCheckpointHook in the real Runner: exports follow the runner's
checkpoints, including the best one and max_keep_ckpts."""
import os
import os.path as osp

import pytest
import torch
from mmengine.runner import Runner

from mmdistill.hooks import student_config

pytestmark = pytest.mark.slow


def test_exports_follow_saved_and_deleted_checkpoints(tiny_cfg):
    cfg, _ = tiny_cfg('pspnet', iters=3)
    cfg.train_cfg.val_interval = 1
    cfg.default_hooks.checkpoint.update(
        interval=1, max_keep_ckpts=1, save_best='mIoU', rule='greater')
    runner = Runner.from_cfg(cfg)
    runner.train()
    files = sorted(os.listdir(cfg.work_dir))
    assert 'iter_3.pth' in files and 'iter_3_student.pth' in files
    # max_keep_ckpts=1 removed iter_1/iter_2, and their exports with them
    assert not {'iter_1.pth', 'iter_1_student.pth', 'iter_2.pth',
                'iter_2_student.pth'} & set(files)
    best = [f for f in files if f.startswith('best_mIoU')]
    assert len(best) == 2, files  # the best runner checkpoint and its export
    runner_best = [f for f in best if not f.endswith('_student.pth')][0]
    export = torch.load(osp.join(cfg.work_dir, best[0] if best[0] !=
                                 runner_best else best[1]))
    saved = torch.load(osp.join(cfg.work_dir, runner_best))['state_dict']
    for key, value in export['state_dict'].items():
        assert torch.equal(value, saved['student.' + key]), key


def test_the_students_ema_hook_averages_and_is_exported(tiny_cfg):
    """A student recipe with EMAHook in its custom_hooks (mmdet's RTMDet,
    YOLOX): mmdistill's hooks sit in default_hooks beside it, the averaged
    copy shares the teacher, and the export holds the averaged weights, as
    mmdet's own checkpoint does."""
    cfg, _ = tiny_cfg('pspnet', iters=2)
    cfg.custom_hooks = [dict(type='EMAHook', momentum=0.5)]
    runner = Runner.from_cfg(cfg)
    runner.train()
    ema, = [h for h in runner.hooks if type(h).__name__ == 'EMAHook']
    assert ema.ema_model.module.teacher is runner.model.teacher
    saved = torch.load(osp.join(cfg.work_dir, 'iter_2.pth'))
    export = torch.load(osp.join(cfg.work_dir, 'iter_2_student.pth'))
    raw = runner.model.student.state_dict()
    averaged = ema.ema_model.module.student.state_dict()
    moved = 0
    for key, value in export['state_dict'].items():
        # EMAHook saves the averaged weights as the checkpoint's state_dict
        assert torch.equal(value, saved['state_dict']['student.' + key])
        assert torch.equal(value, averaged[key])
        moved += not torch.equal(value, raw[key])
    assert moved  # the averaged weights, not the trained ones


def test_student_config_drops_the_distiller(tiny_cfg):
    cfg, _ = tiny_cfg('retinanet')
    plain = student_config(cfg)
    assert plain.model.type == 'RetinaNet'
    assert 'teacher' not in plain.model
    assert 'custom_hooks' not in plain and 'custom_imports' not in plain
    assert 'distill_hooks' not in plain
    assert not [h for h in plain.default_hooks.values()
                if 'mmdistill' in str(h['type'])]
    assert plain.default_hooks.checkpoint == cfg.default_hooks.checkpoint
    assert plain.train_dataloader == cfg.train_dataloader


def test_a_hook_listed_twice_or_unsafe_stops_before_training(tiny_cfg):
    """A config written for an earlier mmdistill lists the hooks in
    custom_hooks too; each copy would export (or skip batches on resume)
    once more: the run stops before training, naming both entries. So does
    a hook that cannot run on a distiller (mmdet's MeanTeacherHook)."""
    from types import SimpleNamespace

    from mmdet.engine.hooks import MeanTeacherHook
    from mmengine.config import Config

    from mmdistill.hooks import RNGStateHook, StudentCheckpointHook
    cfg, _ = tiny_cfg('pspnet', iters=1)
    cfg.custom_hooks = [dict(type='mmdistill.StudentCheckpointHook'),
                        dict(type='mmdistill.RNGStateHook')]
    runner = Runner.from_cfg(cfg)
    with pytest.raises(ValueError) as err:
        runner.train()
    assert ('RNGStateHook is registered 2 times (default_hooks.rng_state, '
            'custom_hooks[1])') in str(err.value)
    assert 'remove it from custom_hooks' in str(err.value)
    assert runner.iter == 0

    # the same checks, on the hooks a Runner would hold
    first, second = StudentCheckpointHook(), StudentCheckpointHook()
    fake = SimpleNamespace(hooks=[first, RNGStateHook(), second],
                           cfg=Config(dict(
                               default_hooks=cfg.default_hooks,
                               custom_hooks=cfg.custom_hooks)))
    with pytest.raises(ValueError, match=r'StudentCheckpointHook is '
                       r'registered 2 times \(default_hooks.student_'
                       r'checkpoint, custom_hooks\[0\]\)'):
        first.before_run(fake)
    second.before_run(fake)  # the first one of a kind raises
    fake.hooks = [first, MeanTeacherHook()]
    with pytest.raises(ValueError, match='would overwrite the frozen '
                       'teacher with the student'):
        first.before_run(fake)


def student_of(path):
    return torch.load(path, weights_only=True)['state_dict']


def assert_export_matches(work_dir, name):
    """``<name>_student.pth`` holds the student of ``<name>.pth``."""
    export = torch.load(osp.join(work_dir, f'{name}_student.pth'),
                        weights_only=True)
    assert export['meta']['source_checkpoint'] == f'{name}.pth'
    saved = torch.load(osp.join(work_dir, f'{name}.pth'),
                       weights_only=False)['state_dict']
    assert export['state_dict'].keys() == {
        k[len('student.'):] for k in saved if k.startswith('student.')}
    for key, value in export['state_dict'].items():
        assert torch.equal(value, saved['student.' + key]), key


def test_resume_writes_missing_exports_and_prunes_orphans(tiny_cfg):
    """A run killed between iter_4.pth and its export, then resumed with
    max_keep_ckpts: the missing export is written at the start, orphans are
    removed (also exports a previous run wrote, when CheckpointHook deletes
    their checkpoint after the resume), and nothing else is touched."""
    from mmdistill.utils.checkpoint import save_student_checkpoint
    cfg, _ = tiny_cfg('pspnet', iters=4)
    cfg.default_hooks.checkpoint.update(interval=1, max_keep_ckpts=2)
    work_dir = cfg.work_dir
    Runner.from_cfg(cfg).train()
    names = set(os.listdir(work_dir))
    assert {'iter_3.pth', 'iter_3_student.pth', 'iter_4.pth',
            'iter_4_student.pth'} <= names
    assert not {'iter_1.pth', 'iter_2.pth', 'iter_2_student.pth'} & names

    # the kill: iter_4.pth saved, its export not
    os.remove(osp.join(work_dir, 'iter_4_student.pth'))
    # an export left behind by an earlier run: iter_2.pth is gone
    state = student_of(osp.join(work_dir, 'iter_3_student.pth'))
    save_student_checkpoint(state, osp.join(work_dir, 'iter_2_student.pth'),
                            meta=dict(source_checkpoint='iter_2.pth'))
    # files named like exports that are not exports of those checkpoints
    # (a user's file, one that cannot be read): kept
    save_student_checkpoint(state, osp.join(work_dir, 'iter_5_student.pth'),
                            meta=dict(source_checkpoint='mine.pth'))
    with open(osp.join(work_dir, 'iter_1_student.pth'), 'wb') as f:
        f.write(b'not a checkpoint')
    kept = {n: open(osp.join(work_dir, n), 'rb').read()
            for n in ('iter_5_student.pth', 'iter_1_student.pth')}
    # the unfinished part of an export killed while writing (no such
    # process) goes, a running writer's stays
    dead = osp.join(work_dir, 'iter_4_student.pth.tmp-999999999')
    live = osp.join(work_dir, f'iter_4_student.pth.tmp-{os.getppid()}')
    for path in (dead, live):
        with open(path, 'wb') as f:
            f.write(b'partial')

    cfg.train_cfg.max_iters = 6
    cfg.resume = True
    cfg.experiment_name = 'resumed'
    Runner.from_cfg(cfg).train()
    names = set(os.listdir(work_dir))
    # CheckpointHook kept iter_5 and iter_6 (its keep list came back from
    # the message hub); the exports of iter_3 (an earlier run's) and iter_4
    # (written at the start of the resume) went with their checkpoints
    pth = {n for n in names if n.endswith('.pth')}
    assert pth == {'iter_5.pth', 'iter_6.pth', 'iter_5_student-1.pth',
                   'iter_6_student.pth', 'iter_5_student.pth',
                   'iter_1_student.pth'}, sorted(names)
    assert not osp.exists(dead) and osp.exists(live)
    for name, data in kept.items():
        assert open(osp.join(work_dir, name), 'rb').read() == data
    assert_export_matches(work_dir, 'iter_6')
    export = torch.load(osp.join(work_dir, 'iter_5_student-1.pth'),
                        weights_only=True)
    assert export['meta']['source_checkpoint'] == 'iter_5.pth'


def test_missing_export_of_an_existing_checkpoint_is_written(tiny_cfg):
    """The export written at the start holds the file's student, the
    file's iteration and dataset meta."""
    cfg, _ = tiny_cfg('pspnet', iters=2)
    cfg.default_hooks.checkpoint.update(interval=1)
    Runner.from_cfg(cfg).train()
    work_dir = cfg.work_dir
    os.remove(osp.join(work_dir, 'iter_1_student.pth'))
    os.remove(osp.join(work_dir, 'iter_2_student.pth'))
    cfg.train_cfg.max_iters = 3
    cfg.resume = True
    cfg.experiment_name = 'resumed'
    Runner.from_cfg(cfg).train()
    for name in ('iter_1', 'iter_2', 'iter_3'):
        assert_export_matches(work_dir, name)
    export = torch.load(osp.join(work_dir, 'iter_1_student.pth'),
                        weights_only=True)
    assert export['meta']['iter'] == 1
    assert export['meta']['dataset_meta']['classes'][0] == 'road'


def test_resume_from_an_earlier_checkpoint_pairs_the_resaved_one(tiny_cfg):
    """Resumed from iter_2.pth, the run saves iter_3.pth again: its export
    has the plain name and holds the new file's student; the export of the
    file it replaced keeps its weights as ``iter_3_student-replaced.pth``
    (nothing lost)."""
    cfg, _ = tiny_cfg('pspnet', iters=3)
    cfg.default_hooks.checkpoint.update(interval=1)
    work_dir = cfg.work_dir
    Runner.from_cfg(cfg).train()
    old = open(osp.join(work_dir, 'iter_3_student.pth'), 'rb').read()
    cfg.resume = True
    cfg.load_from = osp.join(work_dir, 'iter_2.pth')
    cfg.experiment_name = 'again'
    Runner.from_cfg(cfg).train()
    assert_export_matches(work_dir, 'iter_3')
    aside = osp.join(work_dir, 'iter_3_student-replaced.pth')
    assert open(aside, 'rb').read() == old
    assert not osp.exists(osp.join(work_dir, 'iter_3_student-1.pth'))


def test_recipe_custom_keys_reaching_distillation_parameters_are_named(
        tiny_cfg):
    """A recipe's paramwise custom_keys match parameter names by substring:
    a pair named 'backbone' puts its new connector at the recipe's backbone
    lr_mult (what mmengine's constructor does, checked here). The run says
    so before training, naming the key, the parameters and the fix; a key
    written for the distiller's parts is not flagged."""
    cfg, _ = tiny_cfg('pspnet', iters=1)
    cfg.model.distill = dict(backbone=cfg.model.distill.pop('stage4'))
    cfg.optim_wrapper.paramwise_cfg = dict(
        custom_keys={'backbone': dict(lr_mult=0.1)})
    runner = Runner.from_cfg(cfg)
    hook = next(h for h in runner.hooks
                if type(h).__name__ == 'StudentCheckpointHook')
    wrapper = runner.build_optim_wrapper(runner.optim_wrapper)
    lr = {id(p): g['lr'] for g in wrapper.optimizer.param_groups
          for p in g['params']}
    base = cfg.optim_wrapper.optimizer.lr
    connector = dict(runner.model.named_parameters())[
        'connectors.backbone.mlp.0.weight']
    assert lr[id(connector)] == pytest.approx(0.1 * base)
    hook.before_run(runner)
    log = open(osp.join(runner.log_dir, f'{runner.timestamp}.log')).read()
    assert ("optim_wrapper.paramwise_cfg.custom_keys of the student's "
            'recipe also apply to the distillation parameters') in log
    assert ("'backbone' (lr_mult=0.1) -> connectors.backbone.mlp.0.weight, "
            'connectors.backbone.mlp.0.bias') in log
    assert "custom_keys={'connectors.<pair>': dict(lr_mult=1.0)}" in log

    cfg.optim_wrapper.paramwise_cfg.custom_keys['connectors.backbone'] = \
        dict(lr_mult=1.0)
    cfg.visualizer.name = 'custom_keys_fixed'
    cfg.work_dir = cfg.work_dir + '_fixed'
    runner = Runner.from_cfg(cfg)
    from mmdistill.utils.config import custom_keys_on_distillation
    assert custom_keys_on_distillation(runner.cfg, runner.model) is None
