"""Fixtures of the shipped-config tests: one random full-size teacher
checkpoint per distinct teacher model (cached for the session), hand-made
batches, the expected distillation loss names and the generated datasets."""
import copy
import hashlib
import json
import shutil

import pytest
import torch


def _model_key(model_cfg) -> str:
    text = json.dumps(model_cfg, sort_keys=True, default=str)
    return hashlib.sha1(text.encode()).hexdigest()[:16]


@pytest.fixture(scope='session')
def teacher_checkpoint(tmp_path_factory):
    """``teacher_checkpoint(teacher_dict) -> path`` of random weights for the
    teacher a config names, built at full size from its config (with its
    ``cfg_options``). Teachers whose model configs are equal (a 1x and a 2x
    schedule of one architecture) share one file; each file is written once
    per test session and deleted at its end (they weigh up to 550 MB)."""
    from mmengine.registry import MODELS, DefaultScope

    from mmdistill.utils.config import load_config
    root = tmp_path_factory.mktemp('teachers')
    cache = {}

    def get(teacher: dict) -> str:
        cfg = load_config(teacher['config'])
        if teacher.get('cfg_options'):
            cfg.merge_from_dict(teacher['cfg_options'])
        model_cfg = cfg.model
        key = _model_key(model_cfg.to_dict())
        if key not in cache:
            torch.manual_seed(0)
            # no init_weights(): that would download the ImageNet backbone;
            # the layers' own initialisation is random enough here
            with DefaultScope.overwrite_default_scope(cfg.default_scope):
                model = MODELS.build(copy.deepcopy(model_cfg))
            path = str(root / f'teacher_{key}.pth')
            torch.save(dict(state_dict=model.state_dict(), meta=dict()), path)
            del model
            cache[key] = path
        return cache[key]

    yield get
    shutil.rmtree(root, ignore_errors=True)


def _det_batch(size=(128, 128), batch=1, seed=0) -> dict:
    """A detection batch as a dataloader yields it (uint8 images, data
    samples with ground-truth boxes), before the data preprocessor."""
    from mmdet.structures import DetDataSample
    from mmengine.structures import InstanceData
    gen = torch.Generator().manual_seed(seed)
    h, w = size
    inputs, samples = [], []
    for i in range(batch):
        inputs.append(torch.randint(0, 256, (3, h, w), generator=gen,
                                    dtype=torch.uint8))
        sample = DetDataSample(
            metainfo=dict(img_id=i, img_shape=(h, w), ori_shape=(h, w),
                          scale_factor=(1.0, 1.0), flip=False))
        sample.gt_instances = InstanceData(
            bboxes=torch.tensor([[8.0, 10.0, 0.55 * w, 0.7 * h],
                                 [0.4 * w, 0.2 * h, w - 4.0, h - 6.0]]),
            labels=torch.tensor([0, 7]))
        sample.ignored_instances = InstanceData(
            bboxes=torch.zeros(0, 4), labels=torch.zeros(0).long())
        samples.append(sample)
    return dict(inputs=inputs, data_samples=samples)


def _seg_batch(size=(128, 128), batch=2, num_classes=19, seed=0) -> dict:
    """A segmentation batch as a dataloader yields it (uint8 images, data
    samples with label maps holding some ignore pixels)."""
    from mmengine.structures import PixelData
    from mmseg.structures import SegDataSample
    gen = torch.Generator().manual_seed(seed)
    h, w = size
    inputs, samples = [], []
    for _ in range(batch):
        inputs.append(torch.randint(0, 256, (3, h, w), generator=gen,
                                    dtype=torch.uint8))
        labels = torch.randint(0, num_classes, (1, h, w), generator=gen)
        labels[:, :h // 8] = 255
        sample = SegDataSample(
            metainfo=dict(img_shape=(h, w), ori_shape=(h, w),
                          pad_shape=(h, w)))
        sample.gt_sem_seg = PixelData(data=labels)
        samples.append(sample)
    return dict(inputs=inputs, data_samples=samples)


def _cls_batch(size=(64, 64), batch=2, num_classes=1000, seed=0) -> dict:
    """A classification batch as a dataloader yields it (uint8 images, data
    samples with a label each), before the data preprocessor (which applies
    Mixup/CutMix, hence 2 images)."""
    from mmpretrain.structures import DataSample
    gen = torch.Generator().manual_seed(seed)
    h, w = size
    inputs, samples = [], []
    for i in range(batch):
        inputs.append(torch.randint(0, 256, (3, h, w), generator=gen,
                                    dtype=torch.uint8))
        sample = DataSample(metainfo=dict(img_shape=(h, w),
                                          ori_shape=(h, w)))
        samples.append(sample.set_gt_label((7 * i + 3) % num_classes))
    return dict(inputs=inputs, data_samples=samples)


def _expected_pairs(distill: dict) -> list:
    """The ``loss_distill_<pair>`` keys a ``distill`` config gives."""
    from mmdistill.distillers.taps import expand_braces
    keys = []
    for name, spec in distill.items():
        count = max(len(expand_braces(spec['student'])),
                    len(expand_braces(spec['teacher'])))
        if count == 1:
            keys.append(f'loss_distill_{name}')
        else:
            keys += [f'loss_distill_{name}_{i}' for i in range(count)]
    return keys


@pytest.fixture(scope='session')
def make_batch():
    """``make_batch(kind, size, batch)``: a hand-made ``'det'``, ``'seg'``
    or ``'cls'`` batch, before the data preprocessor."""

    def make(kind: str, size=(128, 128), batch=None) -> dict:
        if kind == 'det':
            return _det_batch(size, batch or 1)
        if kind == 'cls':
            return _cls_batch(size, batch or 2)
        return _seg_batch(size, batch or 2)

    return make


@pytest.fixture(scope='session')
def distill_keys():
    """``distill_keys(distill_cfg)``: the ``loss_distill_<pair>`` names."""
    return _expected_pairs
