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


def test_student_config_drops_the_distiller(tiny_cfg):
    cfg, _ = tiny_cfg('retinanet')
    plain = student_config(cfg)
    assert plain.model.type == 'RetinaNet'
    assert 'teacher' not in plain.model
    assert 'custom_hooks' not in plain and 'custom_imports' not in plain
    assert plain.train_dataloader == cfg.train_dataloader
