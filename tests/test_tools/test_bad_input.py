"""Bad input, table-driven: each row is what a careful user or a hostile file
gives a training run, the exception it must stop with, a fragment of its
message, and the check that nothing already in the work dir was lost or
changed.

Each row builds mmengine's Runner from a shrunken shipped PSPNet
distillation config (as tools/train.py does) and trains; every row stops
before the first iteration, or at the first one (a connector's wrong
channels, a loss weight of 1e30).
"""
import copy
import hashlib
import os
import os.path as osp
import pickle

import pytest
import torch
from mmengine.config import Config
from mmengine.runner import Runner

import mmdistill  # noqa: F401
from mmdistill.utils.checkpoint import (CheckpointError,
                                        CheckpointMismatchError,
                                        UnsafeCheckpointError)
from mmdistill.distillers.guard import DistillGuardError
from tools_support import write_tiny_config


class Payload:
    """Creates ``marker`` when unpickled."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, 'w'))


@pytest.fixture(scope='module')
def base(tmp_path_factory):
    root = str(tmp_path_factory.mktemp('bad_input'))
    path = write_tiny_config('pspnet', root, length=1, probe=False)
    cfg = Config.fromfile(path)
    cfg.custom_imports = dict(imports=['mmdistill'],
                              allow_failed_imports=False)
    files = dict(root=root, teacher=cfg.model.teacher.checkpoint)
    files['corrupt'] = osp.join(root, 'corrupt.pth')
    with open(files['corrupt'], 'wb') as f:
        f.write(os.urandom(100))
    files['truncated'] = osp.join(root, 'truncated.pth')
    with open(files['teacher'], 'rb') as f:
        data = f.read()
    with open(files['truncated'], 'wb') as f:
        f.write(data[:len(data) // 2])
    files['nope'] = osp.join(root, 'no_such_teacher.pth')
    files['marker'] = osp.join(root, 'payload_ran')
    files['malicious'] = osp.join(root, 'malicious.pth')
    torch.save(dict(state_dict={}, x=Payload(files['marker'])),
               files['malicious'])
    files['unrelated'] = osp.join(root, 'unrelated.pth')
    torch.save(dict(state_dict={'fc.weight': torch.zeros(3, 3),
                                'bn.num_batches_tracked': torch.tensor(1)}),
               files['unrelated'])
    # a checkpoint whose BN counters and biases fit, but no weight
    state = torch.load(files['teacher'], map_location='cpu')['state_dict']
    files['counters'] = osp.join(root, 'counters.pth')
    torch.save(dict(state_dict={
        k: v for k, v in state.items()
        if k.endswith(('num_batches_tracked', '.bias'))}), files['counters'])
    return cfg, files


def teacher(key):
    return lambda cfg, f: cfg.model.teacher.update(checkpoint=f[key])


def teacher_lenient(key):
    return lambda cfg, f: cfg.model.teacher.update(checkpoint=f[key],
                                                   strict=False)


def student_checkpoint(key):
    return lambda cfg, f: cfg.model.update(student_checkpoint=f[key])


def load_from(key, resume=False):

    def change(cfg, f):
        cfg.load_from = f[key]
        cfg.resume = resume

    return change


def set_teacher_config(cfg, f):
    cfg.model.teacher.config = 'mmseg::pspnet/no_such_config.py'


def set_unknown_tap(cfg, f):
    pair = next(iter(cfg.model.distill.values()))
    pair.student = 'backbone.layer5'


def first_pair(cfg):
    return next(iter(cfg.model.distill.values()))


def set_connector_in_channels(cfg, f):
    first_pair(cfg).connector.in_channels = 3


def set_huge_loss_weight(cfg, f):
    first_pair(cfg).loss.loss_weight = 1e30


def set_url_teacher(cfg, f):
    cfg.model.teacher.checkpoint = 'http://127.0.0.1:9/pspnet_teacher.pth'


ROWS = [
    # (id, change, exception, message fragment)
    ('teacher missing', teacher('nope'), FileNotFoundError, 'not found'),
    ('teacher random bytes', teacher('corrupt'), CheckpointError,
     'is not a readable checkpoint'),
    ('teacher truncated', teacher('truncated'), CheckpointError,
     'is not a readable checkpoint'),
    ('teacher malicious', teacher('malicious'), UnsafeCheckpointError,
     'Refusing to load'),
    ('teacher unrelated, strict', teacher('unrelated'),
     CheckpointMismatchError, 'not a single weight fits'),
    ('teacher counters only, strict=False', teacher_lenient('counters'),
     CheckpointMismatchError, 'would load'),
    ('teacher url without network', set_url_teacher, CheckpointError,
     'http://127.0.0.1:9/pspnet_teacher.pth'),
    ('teacher config missing', set_teacher_config, FileNotFoundError,
     'no_such_config.py'),
    ('student checkpoint unrelated', student_checkpoint('unrelated'),
     CheckpointMismatchError, 'student'),
    ('student checkpoint malicious', student_checkpoint('malicious'),
     UnsafeCheckpointError, 'Refusing to load'),
    ('load_from corrupt', load_from('corrupt'), CheckpointError,
     'is not a readable checkpoint'),
    ('load_from malicious', load_from('malicious'), UnsafeCheckpointError,
     'Refusing to load'),
    ('resume malicious', load_from('malicious', resume=True),
     UnsafeCheckpointError, 'Refusing to load'),
    ('resume truncated', load_from('truncated', resume=True),
     CheckpointError, 'is not a readable checkpoint'),
    ('unknown tap', set_unknown_tap, KeyError, 'backbone.layer4'),
    ('connector for other channels', set_connector_in_channels,
     RuntimeError, 'connector.in_channels='),
    ('loss weight 1e30', set_huge_loss_weight, DistillGuardError,
     'loss_weight'),
]


def snapshot(folder):
    out = {}
    for dirpath, _, names in os.walk(folder):
        for name in names:
            path = osp.join(dirpath, name)
            with open(path, 'rb') as f:
                out[osp.relpath(path, folder)] = hashlib.sha256(
                    f.read()).hexdigest()
    return out


@pytest.mark.slow
@pytest.mark.parametrize('row', ROWS, ids=[r[0] for r in ROWS])
def test_bad_input_stops_clearly_and_loses_nothing(base, tmp_path, row):
    _, change, exception, fragment = row
    cfg, files = base
    cfg = copy.deepcopy(cfg)
    cfg.work_dir = str(tmp_path / 'work')
    # what an earlier run left in the work dir
    os.makedirs(cfg.work_dir)
    for name, data in (('iter_4.pth', b'earlier checkpoint'),
                       ('iter_4_student.pth', b'earlier export'),
                       ('last_checkpoint', b'iter_4.pth'),
                       ('20260101_000000/20260101_000000.log', b'old log')):
        os.makedirs(osp.dirname(osp.join(cfg.work_dir, name)), exist_ok=True)
        with open(osp.join(cfg.work_dir, name), 'wb') as f:
            f.write(data)
    before = snapshot(cfg.work_dir)
    change(cfg, files)
    with pytest.raises(exception) as err:
        runner = Runner.from_cfg(cfg)
        runner.train()
    message = str(err.value)
    assert fragment in message, message
    assert 'weights_only=False' not in message
    assert not osp.exists(files['marker'])
    after = snapshot(cfg.work_dir)
    for name, digest in before.items():
        assert after.get(name) == digest, f'{name} was lost or changed'
    assert pickle  # the payload class pickles by reference to this module
