"""Logit taps on mmpretrain ``ImageClassifier`` students and teachers (ResNet
/ MobileNet-V2 backbones, ``LinearClsHead``): the shipped KD / DKD / DIST
configs with shrunken real models. ``head.fc`` (or the whole ``head``)
gives the logits of both models, the teacher stops at them, the student's
own cross-entropy stays in the loss dict next to ``loss_distill_logits``,
and each config trains in the mmengine Runner (DKD also under Mixup/CutMix
with its warm-up)."""
import os.path as osp

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from mmengine.config import Config
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper
from mmengine.registry import MODELS, DefaultScope
from mmengine.runner import Runner

from mmdistill.testing import (random_batch, random_checkpoint,
                               teacher_overrides, tiny_classification,
                               tiny_model)
from mmdistill.utils.config import load_config

pytest.importorskip(
    'mmpretrain.models',
    reason='mmpretrain.models cannot be imported (torchvision is missing or '
    'unusable here)')

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
CONFIGS = {
    'kd': 'configs/kd/kd_logits_resnet34_resnet18_100e_in1k.py',
    'dkd': 'configs/dkd/dkd_logits_resnet34_resnet18_100e_in1k.py',
    'dist': 'configs/dist/dist_logits_resnet34_resnet18_100e_in1k.py',
    'dkd_mobilenet':
    'configs/dkd/dkd_logits_resnet50_mobilenet-v2_300e_in1k.py',
}
SIZE = 32  # crops of the generated ImageNet layout


def shrunken(name: str, tmp_path) -> Config:
    """The shipped config ``name`` with a width-8 student and a width-16
    teacher of random weights."""
    cfg = Config.fromfile(osp.join(ROOT, CONFIGS[name]))
    cfg.model.student = tiny_model(cfg.model.student, 'cls', width=8)
    teacher_cfg = load_config(cfg.model.teacher.config)
    teacher = tiny_model(teacher_cfg.model, 'cls', width=16)
    cfg.model.teacher.checkpoint = random_checkpoint(
        teacher, str(tmp_path / f'{name}_teacher.pth'), scope='mmpretrain')
    cfg.model.teacher.cfg_options = teacher_overrides(teacher)
    return cfg


def build(cfg: Config):
    """``cfg.model`` built as the Runner builds it."""
    model_cfg = cfg.model.copy()
    model_cfg.setdefault('data_preprocessor', cfg.get('data_preprocessor'))
    with DefaultScope.overwrite_default_scope(cfg.default_scope):
        return MODELS.build(model_cfg)


def np_kd(student, teacher, tau):
    def log_softmax(z):
        z = z / tau
        z = z - z.max(axis=1, keepdims=True)
        return z - np.log(np.exp(z).sum(axis=1, keepdims=True))

    log_s, log_t = log_softmax(student), log_softmax(teacher)
    return tau**2 * (np.exp(log_t) * (log_t - log_s)).sum(axis=1).mean()


@pytest.fixture(scope='module')
def kd_model(tmp_path_factory):
    torch.manual_seed(0)
    cfg = shrunken('kd', tmp_path_factory.mktemp('kd'))
    model = build(cfg)
    model.train()
    return model


def preprocessed(model, batch=4, seed=0):
    data = random_batch('cls', (SIZE, SIZE), batch, seed=seed)
    return model.data_preprocessor(data, True)


def test_head_fc_taps_give_both_logits_and_keep_the_cross_entropy(kd_model):
    model = kd_model
    data = preprocessed(model)
    inputs, samples = data['inputs'], data['data_samples']
    calls = dict(fc=0, head=0)
    teacher = model.teacher
    hooks = [
        teacher.head.fc.register_forward_hook(
            lambda *_: calls.__setitem__('fc', calls['fc'] + 1)),
        teacher.head.register_forward_hook(
            lambda *_: calls.__setitem__('head', calls['head'] + 1)),
    ]
    try:
        losses = model(inputs, samples, mode='loss')
    finally:
        for hook in hooks:
            hook.remove()
    # the student's own loss (mmpretrain names it 'loss') and the pair
    assert set(losses) == {'loss', 'loss_distill_logits'}
    # the teacher ran its classifier once and stopped at its logits: the
    # head's forward did not return (StopForward right after head.fc)
    assert calls == dict(fc=1, head=0)

    with torch.no_grad():
        student_logits = model.student(inputs, mode='tensor')
        teacher_logits = teacher(inputs, mode='tensor')
    assert student_logits.shape == teacher_logits.shape == (4, 1000)
    labels = torch.cat([s.gt_label for s in samples])
    # the config's CE weight 0.5 and KD (tau 1, weight 0.5)
    assert losses['loss'].item() == pytest.approx(
        0.5 * F.cross_entropy(student_logits, labels).item(), rel=1e-5)
    assert losses['loss_distill_logits'].item() == pytest.approx(
        0.5 * np_kd(student_logits.double().numpy(),
                    teacher_logits.double().numpy(), 1.0), rel=1e-5)

    # the gradient reaches the student's classifier and backbone only
    model.zero_grad()
    (losses['loss'] + losses['loss_distill_logits']).backward()
    assert model.student.head.fc.weight.grad.abs().sum() > 0
    assert model.student.backbone.conv1.weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in teacher.parameters())


def test_teacher_never_computes_its_loss_or_predictions(kd_model,
                                                        monkeypatch):

    def forbidden(*args, **kwargs):
        raise AssertionError('the teacher must only run in tensor mode')

    monkeypatch.setattr(kd_model.teacher.head, 'loss', forbidden)
    monkeypatch.setattr(kd_model.teacher.head, 'predict', forbidden)
    data = preprocessed(kd_model, seed=1)
    losses = kd_model(data['inputs'], data['data_samples'], mode='loss')
    assert torch.isfinite(losses['loss_distill_logits'])


def test_whole_head_tap_equals_head_fc(tmp_path):
    values = {}
    for tap in ('head.fc', 'head'):
        torch.manual_seed(0)
        cfg = shrunken('kd', tmp_path)
        cfg.model.distill.logits.student = tap
        cfg.model.distill.logits.teacher = tap
        model = build(cfg)
        model.train()
        data = preprocessed(model, seed=2)
        values[tap] = model(data['inputs'], data['data_samples'],
                            mode='loss')
    for key in ('loss', 'loss_distill_logits'):
        assert torch.allclose(values['head'][key], values['head.fc'][key])


def test_logged_total_includes_the_distillation_loss(kd_model):
    data = preprocessed(kd_model, seed=3)
    losses = kd_model(data['inputs'], data['data_samples'], mode='loss')
    total, log_vars = kd_model.parse_losses(losses)
    assert total.item() == pytest.approx(
        (losses['loss'] + losses['loss_distill_logits']).item())
    assert log_vars['loss'].item() == pytest.approx(total.item())
    # the student's own 'loss' is logged under another name
    assert log_vars['loss_student'].item() == pytest.approx(
        losses['loss'].item())


class Record(Hook):
    """Weights before training, the log variables of every iteration and,
    for DKD, the warm-up factor of every iteration."""

    def __init__(self):
        self.outputs, self.factors = [], []

    @staticmethod
    def distiller(runner):
        model = runner.model
        return model.module if is_model_wrapper(model) else model

    def before_train(self, runner):
        distiller = self.distiller(runner)
        self.student = {k: v.detach().clone()
                        for k, v in distiller.student.state_dict().items()}
        self.teacher = {k: v.detach().clone()
                        for k, v in distiller.teacher.state_dict().items()}

    def after_train_iter(self, runner, batch_idx, data_batch=None,
                         outputs=None):
        self.outputs.append({k: torch.as_tensor(v).detach().clone()
                             for k, v in outputs.items()})
        loss = self.distiller(runner).distill_losses['logits']
        if hasattr(loss, 'warmup_factor'):
            self.factors.append(loss.warmup_factor())


@pytest.mark.slow
@pytest.mark.parametrize('name', sorted(CONFIGS))
def test_two_iterations_in_the_runner(name, tmp_path, imagenet_root,
                                      monkeypatch):
    cfg = shrunken(name, tmp_path)
    tiny_classification(cfg, str(tmp_path / 'work'), imagenet_root,
                        size=SIZE, epochs=1)
    targets = []
    if name == 'dkd':
        # Mixup / CutMix soft labels, and a 2-iteration warm-up
        cfg.data_preprocessor.batch_augments = dict(augments=[
            dict(type='Mixup', alpha=0.8),
            dict(type='CutMix', alpha=1.0)
        ])
        cfg.model.distill.logits.loss.warmup_iters = 2
        from mmdistill.losses import dkd
        original = dkd.dkd_targets

        def spy(samples, *args):
            got = original(samples, *args)
            scores = torch.stack([s.gt_score for s in samples])
            targets.append((got.clone(), scores.argmax(dim=1)))
            return got

        monkeypatch.setattr(dkd, 'dkd_targets', spy)
    record = Record()
    runner = Runner.from_cfg(cfg)
    runner.register_hook(record, priority='LOWEST')
    runner.train()

    assert runner.iter == 2 and len(record.outputs) == 2
    for outputs in record.outputs:
        assert torch.isfinite(outputs['loss_distill_logits'])
        assert outputs['loss_distill_logits'] > 0
        # the student's cross-entropy is logged (mmengine keeps the
        # student's 'loss' entry under that name)
        assert torch.isfinite(outputs['loss']) and outputs['loss'] > 0
    distiller = Record.distiller(runner)
    final = distiller.student.state_dict()
    changed = [k for k, v in record.student.items()
               if v.is_floating_point() and not torch.equal(v, final[k])]
    assert any(k.startswith('backbone.') for k in changed), changed
    assert any(k.startswith('head.fc') for k in changed), changed
    for k, v in distiller.teacher.state_dict().items():
        assert torch.equal(v, record.teacher[k]), k
    if name == 'dkd':
        # the official ramp min((i + 1) / W, 1) over iterations 0 and 1
        assert record.factors == [0.5, 1.0]
        assert len(targets) == 2
        for got, argmax in targets:
            assert torch.equal(got.cpu(), argmax.cpu())


def test_tiny_model_shrinks_the_shipped_cnn_classifiers():
    """mmdistill.testing's shrinking keeps depth, classes and module names
    of the ResNet and MobileNet-V2 classifiers of the shipped configs, and
    names a backbone it cannot shrink."""
    for config, width, features in (
            ('mmpretrain::resnet/resnet18_8xb32_in1k.py', 8, 64),
            ('mmpretrain::resnet/resnet50_8xb32_in1k.py', 8, 256),
            ('mmpretrain::mobilenet_v2/mobilenet-v2_8xb32_in1k.py', 8,
             1280)):
        model = tiny_model(load_config(config).model, 'cls', width=width)
        with DefaultScope.overwrite_default_scope('mmpretrain'):
            built = MODELS.build(model)
        logits = built.eval()(torch.zeros(1, 3, 32, 32), mode='tensor')
        assert logits.shape == (1, 1000)
        assert built.head.fc.in_features == features
    with pytest.raises(ValueError, match="not a 'ConvNeXt' backbone"):
        tiny_model(dict(backbone=dict(type='ConvNeXt')), 'cls')
