"""Train a distillation (or any OpenMMLab) config with mmengine's Runner.

Usage: python tools/train.py CONFIG [--work-dir DIR] [--amp] [--auto-scale-lr]
       [--no-validate] [--no-pin-memory] [--no-persistent-workers]
       [--resume [CKPT]] [--cfg-options KEY=VALUE ...]
       [--launcher {none,pytorch,slurm,mpi}]

Several processes: ``tools/dist_train.sh CONFIG N`` (torchrun) or
``tools/slurm_train.sh``. Without a CUDA device the processes use the gloo
backend on the CPU (see ``mmdistill.utils.setup_env``).
"""
import argparse
import os
import os.path as osp
import re
import sys

from mmengine.config import Config, DictAction
from mmengine.runner import Runner


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description='Train a distiller')
    parser.add_argument('config', help='train config file path')
    parser.add_argument('--work-dir', help='the dir to save logs and models')
    parser.add_argument(
        '--amp',
        action='store_true',
        help='enable automatic mixed precision (mmengine\'s AmpOptimWrapper: '
        'needs a CUDA, NPU, MLU or MUSA device)')
    parser.add_argument(
        '--auto-scale-lr',
        action='store_true',
        help='scale the learning rate by the real batch size (processes x '
        'train_dataloader.batch_size) over the config\'s '
        'auto_scale_lr.base_batch_size, as mmdet\'s and mmpretrain\'s '
        'train.py do')
    parser.add_argument(
        '--no-validate',
        action='store_true',
        help='do not validate during training (no val_cfg, val_dataloader, '
        'val_evaluator), as mmpretrain\'s train.py')
    parser.add_argument(
        '--no-pin-memory',
        action='store_true',
        help='pin_memory=False in every dataloader (mmpretrain\'s flag)')
    parser.add_argument(
        '--no-persistent-workers',
        action='store_true',
        help='persistent_workers=False in every dataloader (mmpretrain\'s '
        'flag)')
    parser.add_argument(
        '--resume',
        nargs='?',
        type=str,
        const='auto',
        help='resume from this checkpoint (a path or URL); without a value, '
        'from the latest checkpoint of the work dir')
    parser.add_argument(
        '--cfg-options',
        nargs='+',
        action=DictAction,
        help='override config settings, e.g. model.teacher.checkpoint=x.pth')
    parser.add_argument(
        '--launcher',
        choices=['none', 'pytorch', 'slurm', 'mpi'],
        default='none',
        help='job launcher')
    # torch.distributed.launch passes --local-rank (torch>=2) or --local_rank.
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    args = parser.parse_args(argv)
    if 'LOCAL_RANK' not in os.environ:
        os.environ['LOCAL_RANK'] = str(args.local_rank)
    return args


def check_resume(resume: str, work_dir: str) -> None:
    """Stop when ``--resume CKPT`` names a local file that does not exist
    (URLs and other ``scheme://`` sources are left to the loader).

    Args:
        resume (str): The value of ``--resume``.
        work_dir (str): The run's work dir (named in the message).
    """
    if '://' in resume:
        return
    path = osp.expanduser(resume)
    if osp.isfile(path):
        return
    what = 'is a directory, not a checkpoint file' if osp.isdir(
        path) else 'does not exist'
    sys.exit(f'error: the checkpoint given to --resume, {resume!r}, {what}. '
             'Give an existing checkpoint, or --resume without a value to '
             'resume from the latest checkpoint of the work dir '
             f'({work_dir}).')


def check_auto_resume(work_dir: str) -> None:
    """Stop when ``--resume`` without a value would resume from a
    checkpoint that is gone: mmengine resumes from the file the work dir's
    ``last_checkpoint`` names, and fails after building the Runner when it
    was deleted (e.g. a corrupt last checkpoint removed by hand).

    Args:
        work_dir (str): The run's work dir.
    """
    record = osp.join(work_dir, 'last_checkpoint')
    if not osp.isfile(record):
        return
    with open(record) as f:
        last = f.read().strip()
    if not last or '://' in last or osp.isfile(last):
        return
    # runner checkpoints (not best_* nor student exports) where it was
    folder = osp.dirname(last) or work_dir
    steps = {}
    for name in (os.listdir(folder) if osp.isdir(folder) else []):
        found = re.fullmatch(r'(?:iter|epoch)_(\d+)\.pth', name)
        if found:
            steps[int(found.group(1))] = osp.join(folder, name)
    hint = (f' The latest one left there: --resume {steps[max(steps)]}'
            if steps else f' No runner checkpoint is left in {folder}.')
    sys.exit(f'error: --resume without a value resumes from the checkpoint '
             f'{record} names, {last}, which no longer exists. Give the '
             f'checkpoint to resume from: --resume CKPT.{hint}')


def enable_auto_scale_lr(cfg: Config) -> None:
    """``--auto-scale-lr``: mmengine's Runner scales the learning rate by
    the real batch size over ``auto_scale_lr.base_batch_size``; stops when
    the config has no such base.

    Args:
        cfg (Config): The config, changed in place.
    """
    scale = cfg.get('auto_scale_lr', None)
    base = scale.get('base_batch_size', None) if isinstance(
        scale, dict) else None
    if (not isinstance(base, (int, float)) or isinstance(base, bool)
            or base <= 0):
        found = ('has no auto_scale_lr' if scale is None else
                 f'has auto_scale_lr = {scale!r}')
        sys.exit('error: --auto-scale-lr needs auto_scale_lr = '
                 'dict(base_batch_size=N) in the config, N the total batch '
                 'size its learning rate is set for (mmdet\'s configs: 16, '
                 f'8 GPUs x 2 images); the config {found}. Add it to the '
                 'config or pass --cfg-options '
                 'auto_scale_lr.base_batch_size=N.')
    cfg.auto_scale_lr.enable = True


#: the default hooks mmengine's Runner knows (None removes one of them)
MMENGINE_DEFAULT_HOOKS = ('runtime_info', 'timer', 'sampler_seed', 'logger',
                          'param_scheduler', 'checkpoint')


def setup_cfg(args) -> Config:
    """Apply the command line to the config, as mmdet's/mmseg's tools do."""
    import mmdistill  # noqa: F401  registries, checkpoint allowlist
    from mmdistill.utils.config import (hook_type_errors, lost_from_student,
                                        unsafe_hook_errors)
    from mmdistill.utils.warn import warn
    from mmdistill.utils.setup_env import prepare_config, set_dataloaders
    try:
        cfg = Config.fromfile(args.config)
    except AttributeError as err:
        if 'custom_hooks' not in str(err):
            raise
        # mmdistill's configs no longer list hooks in custom_hooks
        sys.exit(f'error: {args.config}: {err}. A config that extends its '
                 "base's hooks writes custom_hooks = [*_base_.get("
                 "'custom_hooks', []), ...] (the shipped distiller bases "
                 "put mmdistill's hooks in default_hooks, not custom_hooks).")
    cfg.launcher = args.launcher
    if args.cfg_options is not None:
        cfg.merge_from_dict(args.cfg_options)
    if args.amp:
        from mmengine.device import get_device

        from mmdistill.utils.setup_env import amp_device_error
        teacher = isinstance(cfg.get('model'), dict) and isinstance(
            cfg.model.get('teacher'), dict)
        error = amp_device_error(
            get_device(), '--amp',
            '--cfg-options model.teacher.dtype=bfloat16' if teacher else None)
        if error:
            sys.exit(f'error: {error}')
    if args.work_dir is not None:
        cfg.work_dir = args.work_dir
    elif cfg.get('work_dir', None) is None:
        cfg.work_dir = osp.join('./work_dirs',
                                osp.splitext(osp.basename(args.config))[0])
    if args.amp:
        optim_wrapper = cfg.optim_wrapper.get('type', 'OptimWrapper')
        if optim_wrapper == 'AmpOptimWrapper':
            print('AMP is already enabled in the config.')
        else:
            cfg.optim_wrapper.type = 'AmpOptimWrapper'
            cfg.optim_wrapper.loss_scale = 'dynamic'
    if args.auto_scale_lr:
        enable_auto_scale_lr(cfg)
    if args.no_validate:  # as mmpretrain's train.py
        cfg.val_cfg = None
        cfg.val_dataloader = None
        cfg.val_evaluator = None
    set_dataloaders(cfg, ('train_dataloader', 'val_dataloader',
                          'test_dataloader'), True, args.no_pin_memory,
                    args.no_persistent_workers)
    if args.resume == 'auto':
        check_auto_resume(cfg.work_dir)
        cfg.resume = True
        cfg.load_from = None
    elif args.resume is not None:
        check_resume(args.resume, cfg.work_dir)
        cfg.resume = True
        cfg.load_from = args.resume
    problems = hook_type_errors(cfg)
    if problems:
        sys.exit('error: ' + '; '.join(problems) + ". mmdistill's hooks "
                 "are written 'mmdistill.<Name>'.")
    if 'student' in (cfg.get('model') or {}):
        problems = unsafe_hook_errors(cfg.get('custom_hooks', None) or [])
        if problems:
            sys.exit('error: ' + ' '.join(problems))
        rank = os.environ.get('RANK', os.environ.get('SLURM_PROCID', '0'))
        if rank == '0':  # once, not per process
            for message in lost_from_student(args.config, cfg):
                warn(message)
    # mmengine's Runner takes None only for its own default hooks: None
    # turns off the others too (default_hooks.rng_state=None)
    for key, hook in list((cfg.get('default_hooks') or {}).items()):
        if hook is None and key not in MMENGINE_DEFAULT_HOOKS:
            cfg.default_hooks.pop(key)
    prepare_config(cfg)
    return cfg


def main(argv=None):
    args = parse_args(argv)
    cfg = setup_cfg(args)
    from mmdistill.utils.setup_env import (finish_distributed,
                                           init_distributed,
                                           sync_buffers_before_save)
    init_distributed(cfg)
    if 'runner_type' not in cfg:
        runner = Runner.from_cfg(cfg)
    else:
        from mmengine.registry import RUNNERS
        runner = RUNNERS.build(cfg)
    # checkpoints hold the buffers the processes average (CPU SyncBN)
    sync_buffers_before_save(runner)
    runner.train()
    finish_distributed()


if __name__ == '__main__':
    main()
