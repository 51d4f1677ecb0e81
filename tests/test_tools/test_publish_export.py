"""publish_model.py and export_student.py on a runner checkpoint with the
layout mmengine writes (meta, state_dict, message_hub with HistoryBuffers,
optimizer, param_schedulers)."""
import contextlib
import hashlib
import importlib.util
import io
import json
import os
import os.path as osp
import re
import subprocess
import sys
from collections import OrderedDict

import pytest
import torch
import torch.nn as nn
from mmengine.config import Config
from mmengine.logging import MessageHub
from tools_support import ROOT, tool_env

DISTILLER_CFG = """\
model = dict(
    type='mmdistill.SingleTeacherDistiller',
    student=dict(type='RetinaNet', backbone=dict(type='ResNet', depth=18)),
    teacher=dict(config='teacher.py', checkpoint='teacher.pth'),
    distill=dict())
custom_imports = dict(imports=['mmdistill'], allow_failed_imports=False)
custom_hooks = [dict(type='mmdistill.StudentCheckpointHook')]
"""
CLASSES = ('circle', 'square')


def sha256(path):
    with open(path, 'rb') as f:
        return hashlib.sha256(f.read()).hexdigest()


def student_module():
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 2, 1))


@pytest.fixture
def runner_checkpoint(tmp_path):
    """A distiller's runner checkpoint as mmengine saves it."""
    student = student_module()
    connector = nn.Conv2d(2, 8, 1)
    state = OrderedDict()
    for key, value in student.state_dict().items():
        state[f'student.{key}'] = value
    for key, value in connector.state_dict().items():
        state[f'connectors.fpn_0.{key}'] = value
    hub = MessageHub.get_instance('publish_test')
    hub.update_scalar('train/loss', 1.5)
    hub.update_scalar('train/lr', 0.01)
    optimizer = torch.optim.SGD(
        list(student.parameters()) + list(connector.parameters()),
        lr=0.01,
        momentum=0.9)
    student(torch.rand(1, 3, 8, 8)).sum().backward()
    optimizer.step()
    ckpt = dict(
        meta=dict(
            epoch=2,
            iter=24,
            cfg=DISTILLER_CFG,
            seed=0,
            experiment_name='exp',
            mmengine_version='0.10.7',
            dataset_meta=dict(classes=CLASSES, palette=[(1, 2, 3),
                                                        (4, 5, 6)])),
        state_dict=state,
        message_hub=hub.state_dict(),
        optimizer=optimizer.state_dict(),
        param_schedulers=[dict(last_epoch=24)])
    path = tmp_path / 'epoch_2.pth'
    torch.save(ckpt, str(path))
    return str(path), student.state_dict()


def run(args, check=True):
    """The tool as its own process (what a user runs)."""
    result = subprocess.run([sys.executable] + args,
                            cwd=ROOT,
                            env=tool_env(),
                            stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT,
                            text=True)
    if check:
        assert result.returncode == 0, result.stdout
    return result


def call(args, check=True):
    """The tool's ``main(argv)`` in this process: the same code as
    :func:`run` without the 3 s of a new interpreter's imports, for the
    tests' repeated calls (each tool runs as a process in one of them).
    Returns what :func:`run` returns: the exit code, and the printed text
    with the ``sys.exit`` message."""
    spec = importlib.util.spec_from_file_location(
        'tool_' + osp.basename(args[0])[:-3], osp.join(ROOT, args[0]))
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    out, code = io.StringIO(), 0
    with contextlib.redirect_stdout(out):
        try:
            tool.main(args[1:])
        except SystemExit as exit_:
            code = exit_.code if isinstance(exit_.code, int) else 1
            if isinstance(exit_.code, str):
                print(exit_.code)
    result = subprocess.CompletedProcess(args, code, out.getvalue())
    if check:
        assert result.returncode == 0, result.stdout
    return result


def load_without_mmdistill(path):
    """torch.load(weights_only=True) in a fresh interpreter that imports
    nothing but torch; returns the keys, meta and a digest of the tensors."""
    code = (
        'import hashlib, json, sys, torch\n'
        f'ckpt = torch.load({path!r}, map_location="cpu", '
        'weights_only=True)\n'
        'assert not [m for m in sys.modules if m.split(".")[0] in '
        '("mmdistill", "mmengine", "mmdet", "mmseg")]\n'
        'digest = hashlib.sha256()\n'
        'for k, v in ckpt["state_dict"].items():\n'
        '    digest.update(k.encode())\n'
        '    digest.update(v.contiguous().reshape(-1).view(torch.uint8)'
        '.numpy().tobytes())\n'
        'print(json.dumps(dict(top=sorted(ckpt), '
        'keys=list(ckpt["state_dict"]), meta=ckpt["meta"], '
        'digest=digest.hexdigest())))\n')
    result = subprocess.run([sys.executable, '-I', '-c', code],
                            stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE,
                            text=True)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def digest_of(state):
    digest = hashlib.sha256()
    for k, v in state.items():
        digest.update(k.encode())
        digest.update(
            v.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def test_publish_student_only(runner_checkpoint, tmp_path):
    ckpt, student_state = runner_checkpoint
    out = tmp_path / 'release' / 'retinanet_r50_distilled.pth'
    result = run(['tools/publish_model.py', ckpt, str(out)])
    written = sorted(os.listdir(out.parent))
    assert len(written) == 1, written  # no temporary file left behind
    match = re.fullmatch(r'retinanet_r50_distilled-([0-9a-f]{8})\.pth',
                         written[0])
    assert match, written
    final = str(out.parent / written[0])
    assert sha256(final)[:8] == match.group(1)
    assert sha256(final) in result.stdout
    assert final in result.stdout

    loaded = load_without_mmdistill(final)
    assert loaded['top'] == ['meta', 'state_dict']  # no optimizer etc.
    assert loaded['keys'] == list(student_state)  # plain student keys
    assert loaded['digest'] == digest_of(student_state)
    meta = loaded['meta']
    assert meta['dataset_meta']['classes'] == list(CLASSES)
    assert meta['epoch'] == 2 and meta['iter'] == 24
    assert meta['source_checkpoint'] == 'epoch_2.pth'
    assert 'cfg' not in meta  # the run's config (teacher paths) stays home


def test_publish_is_reproducible_and_never_overwrites(runner_checkpoint,
                                                      tmp_path):
    ckpt, _ = runner_checkpoint
    first = tmp_path / 'a' / 'model.pth'
    second = tmp_path / 'b' / 'model.pth'
    run(['tools/publish_model.py', ckpt, str(first)])
    call(['tools/publish_model.py', ckpt, str(second)])
    name_a, = os.listdir(first.parent)
    name_b, = os.listdir(second.parent)
    assert name_a == name_b  # same input, same bytes, same name
    final = first.parent / name_a

    # its student export, published: the same file (it names the runner
    # checkpoint it came from)
    export = tmp_path / 'export.pth'
    call(['tools/export_student.py', ckpt, '--out', str(export)])
    third = tmp_path / 'c' / 'model.pth'
    call(['tools/publish_model.py', str(export), str(third)])
    assert os.listdir(third.parent) == [name_a]

    # publishing again: reported, nothing rewritten
    stat = final.stat()
    result = call(['tools/publish_model.py', ckpt, str(first)])
    assert 'already published' in result.stdout
    assert final.stat().st_mtime_ns == stat.st_mtime_ns
    assert os.listdir(first.parent) == [name_a]

    # another file under that name is not replaced
    final.write_bytes(b'someone else\'s file')
    result = call(['tools/publish_model.py', ckpt, str(first)],
                  check=False)
    assert result.returncode != 0
    assert 'exists with other content' in result.stdout
    assert final.read_bytes() == b'someone else\'s file'
    assert os.listdir(first.parent) == [name_a]


def test_publish_refuses_bad_input(tmp_path):
    missing = run(['tools/publish_model.py', str(tmp_path / 'none.pth'),
                   str(tmp_path / 'out.pth')], check=False)
    assert missing.returncode != 0 and 'does not exist' in missing.stdout
    for tool in ('tools/publish_model.py', 'tools/export_student.py'):
        folder = call([tool, str(tmp_path), str(tmp_path / 'out.pth')]
                      if 'publish' in tool else [tool, str(tmp_path)],
                      check=False)
        assert folder.returncode != 0
        assert 'is a directory; give a checkpoint file in it' in \
            folder.stdout
    corrupt = tmp_path / 'corrupt.pth'
    corrupt.write_bytes(b'\x80\x02not a checkpoint')
    result = call(['tools/publish_model.py', str(corrupt),
                   str(tmp_path / 'out.pth')], check=False)
    assert result.returncode != 0
    assert 'not a readable checkpoint' in result.stdout
    assert sorted(os.listdir(tmp_path)) == ['corrupt.pth']


def test_export_refuses_to_overwrite_without_force(runner_checkpoint,
                                                   tmp_path):
    ckpt, student_state = runner_checkpoint
    default_out = ckpt[:-len('.pth')] + '_student.pth'
    run(['tools/export_student.py', ckpt])
    assert osp.isfile(default_out)
    loaded = load_without_mmdistill(default_out)
    assert loaded['keys'] == list(student_state)
    assert loaded['digest'] == digest_of(student_state)
    # the student config beside it: plain model, no mmdistill parts
    student_cfg = Config.fromfile(default_out[:-len('.pth')] + '.py')
    assert student_cfg.model.type == 'RetinaNet'
    assert 'custom_imports' not in student_cfg
    assert 'custom_hooks' not in student_cfg

    before = sha256(default_out)
    os.utime(default_out, (0, 0))
    result = call(['tools/export_student.py', ckpt], check=False)
    assert result.returncode != 0
    assert '--force' in result.stdout
    assert sha256(default_out) == before
    assert os.stat(default_out).st_mtime == 0  # not even rewritten

    call(['tools/export_student.py', ckpt, '--force'])
    assert os.stat(default_out).st_mtime > 0
    assert load_without_mmdistill(default_out)['digest'] == digest_of(
        student_state)

    custom = tmp_path / 'exports' / 'student.pth'
    call(['tools/export_student.py', ckpt, '--out', str(custom)])
    assert load_without_mmdistill(str(custom))['keys'] == list(student_state)


def test_export_refuses_a_checkpoint_without_student(tmp_path):
    plain = tmp_path / 'plain.pth'
    torch.save(dict(state_dict=student_module().state_dict()), str(plain))
    result = run(['tools/export_student.py', str(plain)], check=False)
    assert result.returncode != 0
    assert 'No "student." weights' in result.stdout
    assert not (tmp_path / 'plain_student.pth').exists()
