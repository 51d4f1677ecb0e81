"""Turn a distillation checkpoint into a release file, as OpenMMLab publishes
its model zoo.

Usage: python tools/publish_model.py IN_FILE OUT_FILE

IN_FILE is a runner checkpoint of a distiller (``iter_N.pth``,
``epoch_N.pth``, ``best_*.pth``): only its student's weights are kept, under
plain mmdet/mmseg/mmpretrain keys (connectors, optimizer, schedulers,
message hub and the run's config are dropped), with ``meta.dataset_meta``.
A student-only checkpoint (``*_student.pth``) is accepted too.

The file is written as ``<OUT_FILE without .pth>-<sha8>.pth``, where sha8 is
the first 8 hex digits of the file's sha256, the name form of the OpenMMLab
model zoo. The same input gives the same bytes and name. An existing file is
never replaced: the same name with the same content is reported as already
published, other content stops the tool.
"""
import argparse
import hashlib
import os
import os.path as osp
import shutil
import sys
import tempfile


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description='Publish the student of a distillation checkpoint')
    parser.add_argument('in_file', help='runner checkpoint of a distiller')
    parser.add_argument(
        'out_file',
        help='output name; the sha256 prefix is appended: '
        'OUT-<sha8>.pth')
    return parser.parse_args(argv)


def sha256sum(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, 'rb') as f:
        for block in iter(lambda: f.read(1 << 20), b''):
            digest.update(block)
    return digest.hexdigest()


def published_name(out_file: str, sha: str) -> str:
    """``work/model.pth`` + sha -> ``work/model-<sha[:8]>.pth``."""
    stem = out_file[:-len('.pth')] if out_file.endswith('.pth') else out_file
    return f'{stem}-{sha[:8]}.pth'


def read_student(in_file: str):
    """(student state dict, meta) of a distiller or student checkpoint."""
    from mmdistill.utils.checkpoint import (STUDENT_PREFIX,
                                            CheckpointError,
                                            UnsafeCheckpointError,
                                            extract_state_dict,
                                            read_checkpoint)
    if osp.isdir(in_file):
        sys.exit(f'error: {in_file!r} is a directory; give a checkpoint '
                 'file in it (e.g. its latest iter_*.pth or epoch_*.pth)')
    if not osp.isfile(in_file):
        sys.exit(f'error: checkpoint {in_file!r} does not exist')
    try:
        ckpt = read_checkpoint(in_file)
        state = extract_state_dict(ckpt, repr(in_file))
    except (CheckpointError, UnsafeCheckpointError) as err:
        sys.exit(f'error: {err}')
    raw = ckpt.get('state_dict', ckpt)
    if any(k.startswith(STUDENT_PREFIX) or k.startswith(
            'module.' + STUDENT_PREFIX) for k in raw):
        print(f'{in_file}: distiller checkpoint, publishing its student '
              f'({len(state)} tensors)')
    else:
        print(f'{in_file}: no distiller keys, publishing it as a student '
              f'checkpoint ({len(state)} tensors)')
    return state, ckpt.get('meta', {}) or {}


def main(argv=None) -> str:
    args = parse_args(argv)
    from mmdistill.utils.checkpoint import save_student_checkpoint
    state, meta = read_student(args.in_file)
    out_dir = osp.dirname(osp.abspath(args.out_file))
    os.makedirs(out_dir, exist_ok=True)
    # the bytes, and so the sha256, are a function of the input alone (the
    # archive inside is written through a file handle: named the same
    # whatever OUT_FILE is); staged under OUT_FILE's name all the same
    workspace = tempfile.mkdtemp(prefix='.publish-', dir=out_dir)
    try:
        staged = osp.join(workspace, osp.basename(args.out_file))
        save_student_checkpoint(
            state,
            staged,
            dataset_meta=meta.get('dataset_meta'),
            meta=dict(
                # an export names the runner checkpoint it came from:
                # publishing either gives the same file
                source_checkpoint=meta.get('source_checkpoint')
                or osp.basename(args.in_file),
                epoch=meta.get('epoch'),
                iter=meta.get('iter')))
        sha = sha256sum(staged)
        final = published_name(args.out_file, sha)
        try:
            os.link(staged, final)  # fails when ``final`` exists
        except FileExistsError:
            if sha256sum(final) != sha:
                sys.exit(f'error: {final} exists with other content; move '
                         'it away or choose another OUT_FILE')
            print(f'{final} is already published with this content')
            return final
        except OSError:  # no hard links on this file system
            if osp.exists(final):
                sys.exit(f'error: {final} exists; move it away or choose '
                         'another OUT_FILE')
            shutil.move(staged, final)
    finally:
        shutil.rmtree(workspace, ignore_errors=True)
    print(f'published: {final}')
    print(f'sha256: {sha}')
    return final


if __name__ == '__main__':
    main()
