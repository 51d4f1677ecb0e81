"""Fixtures of every test: the mmdistill registry scope, the generated
datasets, and shrunken real distillation configs over them (the table of
configs is ``tests/tiny_configs.py``)."""
import os.path as osp
import sys

import pytest
from mmengine.registry import DefaultScope

HERE = osp.dirname(osp.abspath(__file__))
# pytest runs with --import-mode=importlib, which puts no test folder on
# sys.path: this one holds tiny_configs, the repository root demo.synthetic
for path in (HERE, osp.dirname(HERE)):
    if path not in sys.path:
        sys.path.insert(0, path)

from demo.synthetic import (write_cityscapes_layout,  # noqa: E402
                            write_coco_layout)
from tiny_configs import (KIND, shrunken_config,  # noqa: E402
                          tiny_runtime_of, write_tiny)


@pytest.fixture(autouse=True)
def mmdistill_scope():
    """Every test starts in the mmdistill scope, as the distiller builds its
    components, whatever scope an earlier test (a Runner of mmdet / mmseg)
    left current; the scopes a test opens are gone after it."""
    with DefaultScope.overwrite_default_scope('mmdistill'):
        yield


@pytest.fixture(scope='session')
def coco_root(tmp_path_factory):
    return write_coco_layout(
        str(tmp_path_factory.mktemp('coco')), dict(train=4, val=2))


@pytest.fixture(scope='session')
def cityscapes_root(tmp_path_factory):
    return write_cityscapes_layout(
        str(tmp_path_factory.mktemp('cityscapes')), dict(train=4, val=2))


@pytest.fixture(scope='session')
def imagenet_root(tmp_path_factory):
    """Random images in mmpretrain's ImageNet layout (4 train, 2 val)."""
    from mmdistill.testing.tiny import write_imagenet_layout
    return write_imagenet_layout(
        str(tmp_path_factory.mktemp('imagenet')), dict(train=4, val=2))


@pytest.fixture
def tiny_cfg(coco_root, cityscapes_root, tmp_path):
    """``tiny_cfg(name, work_dir=None, same_shape=None, **kwargs)`` ->
    (cfg, teacher checkpoint path) for one of ``tiny_configs.CONFIGS``,
    ready for ``Runner.from_cfg``; ``kwargs`` go to ``tiny_detection`` /
    ``tiny_segmentation``. A test's calls share one teacher checkpoint per
    (name, same_shape)."""

    def make(name, work_dir=None, same_shape=None, **kwargs):
        teacher = str(tmp_path / f'{name}_{same_shape}_teacher.pth')
        cfg = shrunken_config(name, teacher, same_shape)
        data_root = coco_root if KIND[name] == 'det' else cityscapes_root
        tiny_runtime_of(cfg, name, work_dir or str(tmp_path / f'{name}_work'),
                        data_root, **kwargs)
        return cfg, teacher

    return make


@pytest.fixture
def pair_files(tmp_path, request):
    """``pair_files(student, teacher, kind)``: the shrunken student (width 8)
    and teacher (width 16) configs on disk."""

    def make(student, teacher, kind, teacher_width=16):
        root = request.getfixturevalue(
            'coco_root' if kind == 'det' else 'cityscapes_root')
        work = str(tmp_path / 'work')
        return (write_tiny(student, kind, 8, str(tmp_path / 'student.py'),
                           root, work),
                write_tiny(teacher, kind, teacher_width,
                           str(tmp_path / 'teacher.py'), root, work))

    return make
