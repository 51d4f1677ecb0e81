"""tools/train.py --resume continues a distillation run from its latest
runner checkpoint (weights-only torch.load on torch >= 2.6)."""
import os
import os.path as osp
import shutil
import sys

import pytest

from conftest import run_tool

pytestmark = pytest.mark.slow


def test_resume_auto_and_explicit(trained, tmp_path):
    work_dir = str(tmp_path / 'work')
    shutil.copytree(trained['work_dir'], work_dir)
    before = set(os.listdir(work_dir))
    result = run_tool([
        sys.executable, 'tools/train.py', trained['config'], '--work-dir',
        work_dir, '--resume', '--cfg-options', 'train_cfg.max_epochs=2'
    ])
    assert 'Epoch(train) [2]' in result.stdout
    assert 'Epoch(train) [1]' not in result.stdout  # not retrained
    after = set(os.listdir(work_dir))
    assert {'epoch_2.pth', 'epoch_2_student.pth'} <= after - before

    explicit = run_tool([
        sys.executable, 'tools/train.py', trained['config'], '--work-dir',
        str(tmp_path / 'explicit'), '--resume',
        osp.join(trained['work_dir'], 'epoch_1.pth'), '--cfg-options',
        'train_cfg.max_epochs=2'
    ])
    assert 'Epoch(train) [2]' in explicit.stdout
    assert 'Epoch(train) [1]' not in explicit.stdout
