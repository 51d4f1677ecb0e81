"""Connector and loss errors name the pair, both taps, their shapes and what
to change (issue 10 item 7), at build time where the taps say their
channels, else at the first forward."""
import copy

import pytest
import torch
from mmengine.config import ConfigDict
from mmengine.registry import MODELS as ROOT_MODELS
from mmengine.registry import DefaultScope

from mmdistill.registry import MODELS


def build(cfg):
    with DefaultScope.overwrite_default_scope(cfg.get('default_scope')):
        return ROOT_MODELS.build(copy.deepcopy(cfg.model))


def forward(model, size=64):
    """One distillation forward on a random preprocessed batch."""
    from mmdistill.testing import random_batch
    kind = 'det' if hasattr(model.student, 'bbox_head') else 'seg'
    data = model.data_preprocessor(
        random_batch(kind, (size, size), 2, 19), True)
    model.train()
    return model(data['inputs'], data['data_samples'], mode='loss')


@pytest.fixture
def retina(tiny_cfg):
    return tiny_cfg('retinanet')[0]  # FPN: student 16, teacher 32 channels


@pytest.fixture
def pspnet(tiny_cfg):
    return tiny_cfg('pspnet')[0]  # layer4: student 64, teacher 128


def test_connector_channels_checked_at_build_where_taps_tell(retina):
    cfg = copy.deepcopy(retina)
    cfg.model.distill.fpn.connector.in_channels = 24
    with pytest.raises(ValueError) as err:
        build(cfg)
    message = str(err.value)
    assert "pair 'fpn_0' (student tap neck.fpn_convs.0.conv" in message
    assert 'MLPConnector has in_channels=24' in message
    assert 'gives 16 channels' in message
    assert 'set distill.fpn.connector.in_channels=16' in message

    cfg = copy.deepcopy(retina)
    cfg.model.distill.fpn.connector.out_channels = 16
    with pytest.raises(ValueError,
                       match=r'set distill.fpn.connector.out_channels=32'):
        build(cfg)

    # one config per level: the message points at the wrong one
    cfg = copy.deepcopy(retina)
    levels = [copy.deepcopy(cfg.model.distill.fpn.connector)
              for _ in range(5)]
    levels[2].in_channels = 8
    cfg.model.distill.fpn.connector = levels
    with pytest.raises(ValueError) as err:
        build(cfg)
    assert 'distill.fpn.connector[2].in_channels=16' in str(err.value)
    assert 'fpn_0' not in str(err.value)


def test_connector_error_at_the_first_forward_names_the_pair(pspnet):
    """backbone.layer4 (a ResLayer) does not say its channels: the wrong
    in_channels surfaces at the first forward, no longer as torch's bare
    conv error."""
    cfg = pspnet
    cfg.model.distill.stage4.connector.in_channels = 32
    model = build(cfg)
    with pytest.raises(RuntimeError) as err:
        forward(model)
    message = str(err.value)
    assert message.startswith(
        "Distillation pair 'stage4' (student tap backbone.layer4, teacher "
        'tap backbone.layer4): the connector MLPConnector (in_channels=32, '
        'out_channels=128) failed on the student tap of shape (2, 64, 8, 8)'
        ' and the teacher tap of shape (2, 128, 8, 8)')
    assert 'set distill.stage4.connector.in_channels=64' in message
    assert isinstance(err.value.__cause__, RuntimeError)  # torch's own


def test_spatial_mismatch_with_a_connector_says_what_to_change(retina):
    cfg = retina
    cfg.model.distill = ConfigDict(p3=dict(
        student='neck.fpn_convs.0.conv',
        teacher='neck.fpn_convs.1.conv',
        connector=dict(type='MLPConnector', in_channels=16, out_channels=32),
        loss=dict(type='L2Loss', loss_weight=1.)))
    model = build(cfg)
    with pytest.raises(ValueError) as err:
        forward(model)
    message = str(err.value)
    assert "pair 'p3'" in message
    assert 'student (8, 8), teacher (4, 4)' in message
    assert ("set distill.p3.connector.resize=dict(mode='bilinear')"
            in message)
    assert 'tap layers with the same output size' in message
    assert 'add a connector' not in message


@pytest.mark.parametrize('mode', ['bilinear', 'nearest', 'pool'])
def test_resize_brings_the_student_to_the_teachers_size(retina, mode):
    """``connector.resize``: the FPN level of stride 8 (8x8 here) compared
    with the teacher's stride-16 level (4x4)."""
    import torch.nn.functional as F
    cfg = retina
    cfg.model.distill = ConfigDict(p3=dict(
        student='neck.fpn_convs.0.conv',
        teacher='neck.fpn_convs.1.conv',
        connector=dict(type='MLPConnector', in_channels=16, out_channels=32,
                       resize=dict(mode=mode)),
        loss=dict(type='L2Loss', loss_weight=1.)))
    model = build(cfg)
    seen = {}
    model.connectors['p3'].register_forward_pre_hook(
        lambda m, args: seen.update(student=args[0]))
    model.student.neck.fpn_convs[0].conv.register_forward_hook(
        lambda m, args, out: seen.update(raw=out))
    losses = forward(model)
    assert torch.isfinite(losses['loss_distill_p3'])
    raw = seen['raw']
    expected = F.adaptive_avg_pool2d(raw, (4, 4)) if mode == 'pool' else \
        F.interpolate(raw, size=(4, 4), mode=mode)
    assert seen['student'].shape[-2:] == (4, 4)
    assert torch.allclose(seen['student'], expected, atol=1e-6)


def test_resize_errors(retina):
    cfg = retina
    cfg.model.distill = ConfigDict(p3=dict(
        student='neck.fpn_convs.1.conv',
        teacher='neck.fpn_convs.0.conv',
        connector=dict(type='MLPConnector', in_channels=16, out_channels=32,
                       resize=dict(mode='pool')),
        loss=dict(type='L2Loss', loss_weight=1.)))
    model = build(cfg)
    with pytest.raises(ValueError, match=r"distill\.p3\.connector\.resize "
                       "mode 'pool' only shrinks"):
        forward(model)
    cfg.model.distill.p3.connector.resize = dict(mode='bicubic')
    with pytest.raises(ValueError, match=r"resize must be dict\(mode="):
        build(cfg)


def test_channel_mismatch_without_a_connector_suggests_one(retina):
    cfg = retina
    cfg.model.distill = ConfigDict(p3=dict(
        student='neck.fpn_convs.0.conv',
        teacher='neck.fpn_convs.0.conv',
        loss=dict(type='L2Loss', loss_weight=1.)))
    model = build(cfg)
    with pytest.raises(ValueError) as err:
        forward(model)
    message = str(err.value)
    assert ("add a connector, e.g. distill.p3.connector=dict(type="
            "'MLPConnector', in_channels=16, out_channels=32)") in message
    assert '(2, 16, 8, 8)' in message and '(2, 32, 8, 8)' in message


def build_p3_with_loss(cfg, loss: str):
    """The RetinaNet distiller with one pair on the first FPN level, an
    MLP connector and the registered loss ``loss``."""
    cfg.model.distill = ConfigDict(p3=dict(
        student='neck.fpn_convs.0.conv', teacher='neck.fpn_convs.0.conv',
        connector=dict(type='MLPConnector', in_channels=16, out_channels=32),
        loss=dict(type=loss)))
    return build(cfg)


def test_other_errors_pass_unchanged(retina):
    @MODELS.register_module(force=True)
    class _NotImplementedLoss(torch.nn.Module):

        def forward(self, student, teacher):
            raise NotImplementedError('left as is')

    model = build_p3_with_loss(retina, '_NotImplementedLoss')
    with pytest.raises(NotImplementedError, match='^left as is$'):
        forward(model)


def test_a_loss_that_returns_a_map_is_named(retina):
    """mmengine would log and optimise the mean of the map without a
    word: a new loss that forgot to reduce is stopped at its first call."""
    @MODELS.register_module(force=True)
    class _MapLoss(torch.nn.Module):

        def forward(self, student, teacher):
            return (student - teacher).abs()

    model = build_p3_with_loss(retina, '_MapLoss')
    with pytest.raises(ValueError,
                       match=r'^distill.p3.loss \(_MapLoss\) returned a '
                       r'tensor of shape \(2, 32, 8, 8\); a distillation '
                       r'loss must return one number .*\.sum\(\) or '
                       r'\.mean\(\)'):
        forward(model)
