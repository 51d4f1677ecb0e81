"""Write the student-only checkpoint of a distillation runner checkpoint.

Usage: python tools/export_student.py CHECKPOINT [--out PATH] [--force]

The output holds the student's weights under plain mmdet/mmseg keys and
``meta.dataset_meta``; next to it, ``<out>.py`` is the student's config (when
the runner checkpoint carries its config), so that
``mmdet/mmseg tools/test.py <out>.py <out>.pth`` works.
"""
import argparse
import os.path as osp
import sys


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description='Export the student of a distillation checkpoint')
    parser.add_argument('checkpoint', help='runner checkpoint (.pth)')
    parser.add_argument(
        '--out',
        help='output file; defaults to <checkpoint>_student.pth beside it')
    parser.add_argument(
        '--force',
        action='store_true',
        help='overwrite an existing output file')
    return parser.parse_args(argv)


def main(argv=None) -> str:
    args = parse_args(argv)
    import mmdistill  # noqa: F401  allows mmengine checkpoints in torch.load
    from mmengine.config import Config

    from mmdistill.utils.config import student_config
    from mmdistill.utils.checkpoint import (CheckpointError,
                                            UnsafeCheckpointError,
                                            read_checkpoint,
                                            save_student_checkpoint,
                                            student_state_dict)
    if osp.isdir(args.checkpoint):
        sys.exit(f'error: {args.checkpoint!r} is a directory; give a '
                 'checkpoint file in it (e.g. its latest iter_*.pth or '
                 'epoch_*.pth)')
    if not osp.isfile(args.checkpoint):
        sys.exit(f'error: checkpoint {args.checkpoint!r} does not exist')
    out = args.out or osp.splitext(args.checkpoint)[0] + '_student.pth'
    if osp.exists(out) and not args.force:
        sys.exit(f'error: {out} exists; choose --out or pass --force to '
                 'overwrite it')
    try:
        ckpt = read_checkpoint(args.checkpoint)
    except (CheckpointError, UnsafeCheckpointError) as err:
        sys.exit(f'error: {err}')
    try:
        state = student_state_dict(
            ckpt.get('state_dict', ckpt) if isinstance(ckpt, dict) else {})
    except KeyError as err:
        sys.exit(f'error: {err.args[0]}')
    meta = ckpt.get('meta', {}) or {}
    save_student_checkpoint(
        state,
        out,
        dataset_meta=meta.get('dataset_meta'),
        meta=dict(
            source_checkpoint=osp.basename(args.checkpoint),
            epoch=meta.get('epoch'),
            iter=meta.get('iter')),
        overwrite=args.force)
    print(f'student-only checkpoint: {out}')
    if isinstance(meta.get('cfg'), str):
        cfg = student_config(Config.fromstring(meta['cfg'], '.py'))
        if cfg is not None:
            cfg_path = osp.splitext(out)[0] + '.py'
            if osp.exists(cfg_path) and not args.force:
                print(f'student config not written: {cfg_path} exists')
            else:
                cfg.dump(cfg_path)
                print(f'student config: {cfg_path}')
    return out


if __name__ == '__main__':
    main()
