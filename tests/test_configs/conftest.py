"""Fixtures of the shipped-config tests: one random full-size teacher
checkpoint per distinct teacher model (cached for the session), hand-made
batches, the expected distillation loss names and the generated datasets."""
import copy
import hashlib
import json
import shutil

import pytest
import torch

from mmdistill.testing import random_batch


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
        return random_batch(kind, size, batch or 0)

    return make


@pytest.fixture(scope='session')
def distill_keys():
    """``distill_keys(distill_cfg)``: the ``loss_distill_<pair>`` names."""
    return _expected_pairs
