"""Connector and loss errors name the pair, both taps, their shapes and what
to change (issue 10 item 7), at build time where the taps say their
channels, else at the first forward. A user's config mistakes stop at build
time naming the config key and the fix: the student's model keys merged
into the distiller (``_delete_=True`` missing), a misspelled loss or
connector type, an argument a connector does not take, a misspelled pair
key, a tap on a container that never runs."""
import copy
import re

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


def first_forward_error(cfg, **pair) -> str:
    """The message of the ValueError the first forward stops with, for the
    RetinaNet distiller with the one pair ``p3``."""
    cfg.model.distill = ConfigDict(p3=pair)
    model = build(cfg)
    with pytest.raises(ValueError) as err:
        forward(model)
    return str(err.value)


def test_channel_mismatch_without_a_connector_suggests_one(retina):
    message = first_forward_error(
        retina, student='neck.fpn_convs.0.conv',
        teacher='neck.fpn_convs.0.conv',
        loss=dict(type='L2Loss', loss_weight=1.))
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


def test_student_keys_merged_into_the_distiller_name_delete(retina):
    """``model = dict(type=..., student=..., ...)`` without ``_delete_``
    inherits the student's ``backbone``, ``neck``, ... from ``_base_``."""
    cfg = retina
    merged = copy.deepcopy(cfg.model.student)
    merged.pop('type')
    merged.pop('data_preprocessor', None)
    cfg.model.update(merged)
    with pytest.raises(TypeError) as err:
        build(cfg)
    message = str(err.value)
    assert "'backbone'" in message and "'neck'" in message
    assert '_delete_=True' in message
    assert 'student={{_base_.model}}' in message


def test_a_distillation_config_in_init_model_names_the_student_config(
        retina):
    """mmseg's ``init_model`` sets ``model.pretrained`` and
    ``model.train_cfg`` before building ``cfg.model``."""
    cfg = retina
    cfg.model.pretrained = None
    cfg.model.train_cfg = None
    with pytest.raises(TypeError) as err:
        build(cfg)
    message = str(err.value)
    assert "['pretrained', 'train_cfg']" in message
    assert 'student_config.py' in message and '_student.pth' in message
    assert '_delete_' not in message


@pytest.mark.parametrize('written,meant', [
    ('L2loss', 'L2Loss'),
    ('ChannelWiseDivergance', 'ChannelWiseDivergence'),
])
def test_a_misspelled_loss_type_names_the_pair_and_the_closest(
        retina, written, meant):
    cfg = retina
    cfg.model.distill.fpn.loss.type = written
    with pytest.raises(KeyError) as err:
        build(cfg)
    message = str(err.value)
    assert message.startswith(f"distill.fpn.loss.type={written!r} is not a "
                              'registered mmdistill connector or loss')
    assert f'did you mean {meant!r}?' in message
    assert 'SingleTeacherDistiller' not in message  # not a pair's component


@pytest.mark.parametrize('loss', [dict(type='mmdet.SmoothL1Loss'),
                                  dict(type='SmoothL1Loss', _scope_='mmdet')])
def test_a_scoped_type_of_another_package_still_builds(retina, loss):
    cfg = retina
    cfg.model.distill.fpn.loss = loss
    model = build(cfg)
    assert type(model.distill_losses['fpn_0']).__name__ == 'SmoothL1Loss'


def test_a_misspelled_scoped_type_names_the_pair(retina):
    cfg = retina
    cfg.model.distill.fpn.loss = dict(type='mmdet.SmoothL1Los')
    with pytest.raises(KeyError) as err:
        build(cfg)
    assert str(err.value).startswith("distill.fpn.loss: 'mmdet.SmoothL1Los "
                                     'is not in the')


def test_a_misspelled_distiller_argument_names_the_closest(retina):
    cfg = retina
    cfg.model.student_checkpont = 'student.pth'
    with pytest.raises(TypeError) as err:
        build(cfg)
    message = str(err.value)
    assert message.startswith("SingleTeacherDistiller does not take "
                              "'student_checkpont' (did you mean "
                              "'student_checkpoint'?)")
    assert '_delete_' not in message


def test_an_argument_a_connector_does_not_take(retina):
    cfg = retina
    cfg.model.distill.fpn.connector.align_corners = True
    with pytest.raises(TypeError) as err:
        build(cfg)
    message = str(err.value)
    assert message.startswith('distill.fpn.connector: ')
    assert "unexpected keyword argument 'align_corners'" in message
    assert 'MLPConnector takes in_channels, out_channels, hidden_channels' \
        in message
    assert "resize=dict(mode='bilinear', align_corners=True)" in message


def test_a_misspelled_pair_key(retina):
    cfg = retina
    cfg.model.distill.fpn.conector = cfg.model.distill.fpn.pop('connector')
    with pytest.raises(ValueError) as err:
        build(cfg)
    message = str(err.value)
    assert "'conector' (did you mean 'connector'?)" in message
    assert 'student, teacher, connector, loss, with_cp' in message


def test_a_tap_on_a_container_that_never_runs(retina):
    """``neck.fpn_convs`` is a ModuleList: its owner loops over it, so it
    would never record; the error names its last element and the owner's
    indexed output, and suggestions never name containers."""
    cfg = retina
    cfg.model.distill.fpn.teacher = 'neck.fpn_convs'
    with pytest.raises(KeyError) as err:
        build(cfg)
    message = str(err.value)
    assert "'neck.fpn_convs' is a ModuleList of the teacher, without a " \
        'forward of its own' in message
    assert "'neck.fpn_convs.4'" in message and "'neck[i]'" in message

    cfg.model.distill.fpn.teacher = 'neck.fpn_conv'
    with pytest.raises(KeyError) as err:
        build(cfg)
    message = str(err.value)
    closest = message.split('(closest: ')[1].split(')')[0]
    assert "'neck.fpn_convs'" not in closest.split(', ')
    assert "'neck.fpn_convs.0'" in closest
    assert '"backbone[3]" is element 3' in message


def test_a_loss_that_aligns_channels_itself_is_told_to(retina):
    """FGD aligns the student's channels with its own 1x1 conv
    (``student_channels``): the fix is that argument, not a connector."""
    message = first_forward_error(
        retina, student='neck.fpn_convs.0.conv',
        teacher='neck.fpn_convs.0.conv',
        loss=dict(type='FGDLoss', in_channels=32))
    assert ('FGDLoss aligns them itself: set '
            'distill.p3.loss.student_channels=16.') in message
    assert 'add a connector' not in message


def test_a_size_mismatch_names_indexed_taps_as_written(retina):
    message = first_forward_error(
        retina, student='neck[0]', teacher='neck[1]',
        connector=dict(type='MLPConnector', in_channels=16, out_channels=32),
        loss=dict(type='L2Loss', loss_weight=1.))
    assert "change the student tap 'neck[0]' or the teacher tap 'neck[1]'" \
        in message


def test_a_preprocessing_warning_reaches_the_run_log(tiny_cfg):
    """Warnings about a run are written into the work dir's log file, not
    only to the console."""
    import os.path as osp

    from mmengine.runner import Runner
    cfg, _ = tiny_cfg('pspnet')
    overrides = dict(cfg.model.teacher.cfg_options or {})
    overrides['model.data_preprocessor.mean'] = [100., 110., 120.]
    cfg.model.teacher.cfg_options = overrides
    with pytest.warns(UserWarning, match="data_preprocessor='own'"):
        runner = Runner.from_cfg(cfg)
    with open(osp.join(runner.log_dir, f'{runner.timestamp}.log')) as f:
        log = f.read()
    line = next(x for x in log.splitlines() if 'preprocesses its input' in x)
    assert 'WARNING' in line and "data_preprocessor='own'" in log


def _fails(module, *inputs):
    try:
        module(*inputs)
    except (ValueError, RuntimeError) as err:
        return err
    raise AssertionError('no error')


def test_tokens_against_maps_name_both_kinds():
    """A ViT's tokens against a CNN's maps: the advice names the two kinds
    (and not "add a connector", which the pair has)."""
    from mmdistill.connectors import MLPConnector
    from mmdistill.distillers.messages import pair_error
    from mmdistill.distillers.pairs import Pair
    from mmdistill.distillers.taps import Tap
    from mmdistill.losses import L2Loss
    pair = Pair('feat', Tap('backbone.layer4'), Tap('backbone.layers.11'),
                None, dict(type='L2Loss'))
    connector, loss = MLPConnector(64, 48), L2Loss()
    raw, teacher = torch.rand(2, 64, 1, 1), torch.rand(2, 5, 48)
    student = connector(raw)
    message = str(pair_error(pair, 'loss', _fails(loss, student, teacher),
                             connector, loss, raw, teacher, student))
    assert ('The student gives maps (N, C, H, W) and the teacher tap '
            'tokens (N, L, C) (a transformer layer)') in message
    assert 'add a connector' not in message


def test_a_map_connector_on_tokens_points_to_the_token_projector():
    from mmdistill.connectors import MLPConnector
    from mmdistill.distillers.messages import pair_error
    from mmdistill.distillers.pairs import Pair
    from mmdistill.distillers.taps import Tap
    from mmdistill.losses import L2Loss
    pair = Pair('feat', Tap('backbone.layers.11'), Tap('backbone.layers.11'),
                dict(type='MLPConnector'), dict(type='L2Loss'))
    connector = MLPConnector(48, 96)
    raw, teacher = torch.rand(2, 17, 48), torch.rand(2, 17, 96)
    message = str(pair_error(pair, 'connector', _fails(connector, raw),
                             connector, L2Loss(), raw, teacher))
    assert ('The student tap gives tokens (N, L, C) (a transformer layer); '
            'MLPConnector takes maps (N, C, H, W)') in message
    assert ("distill.feat.connector=dict(type='TokenProjector', "
            'in_channels=48') in message


def test_losses_that_compare_no_maps_get_no_map_advice():
    """ViTAttentionLoss compares attention from qkv projections; AT
    compares channel means: no "channels differ, add a connector"."""
    from mmdistill.distillers.messages import shape_advice
    from mmdistill.distillers.pairs import Pair
    from mmdistill.distillers.taps import Tap
    from mmdistill.losses import ATLoss, L2Loss, ViTAttentionLoss
    pair = Pair('p', Tap('a'), Tap('b'), None, dict(type='L2Loss'))
    tokens = torch.rand(2, 17, 144), torch.rand(2, 18, 288)
    assert shape_advice(pair, None, *tokens,
                        ViTAttentionLoss(student_heads=3,
                                         teacher_heads=6)) == []
    assert shape_advice(pair, None, *tokens, L2Loss())  # channels differ
    maps = torch.rand(2, 16, 8, 8), torch.rand(2, 32, 4, 4)
    advice = shape_advice(pair, None, *maps, ATLoss())
    assert len(advice) == 1 and 'spatial sizes differ' in advice[0]
    assert len(shape_advice(pair, None, *maps, L2Loss())) == 2


def _tiny_dino():
    """mmdet's DINO-4scale with a ResNet-18 of width 8, one encoder and two
    decoder layers, 10 object queries and 6 denoising ones per group
    (DINO's decoder needs embed_dims=256)."""
    from mmdistill.testing.tiny import shrink_resnet
    from mmdistill.utils.config import load_config
    cfg = load_config('mmdet::dino/dino-4scale_r50_8xb2-12e_coco.py')
    model = cfg.model
    model.neck.in_channels = shrink_resnet(model.backbone, 8, 18)[-3:]
    model.encoder.num_layers, model.decoder.num_layers = 1, 2
    for layer in (model.encoder.layer_cfg, model.decoder.layer_cfg):
        layer.ffn_cfg.feedforward_channels = 64
        for attention in ('self_attn_cfg', 'cross_attn_cfg'):
            if attention in layer:
                layer[attention].num_heads = 2
                if 'num_points' in layer[attention]:
                    layer[attention].num_points = 1
    model.num_queries = 10
    model.dn_cfg.group_cfg.num_dn_queries = 6
    return cfg


def test_detr_decoder_queries_name_the_denoising_queries(tmp_path):
    """A DINO student tapped at its decoder: in training it runs the
    denoising queries ahead of the object queries, the teacher (eval mode)
    does not. The message says so and what to tap instead (before, it
    showed the two shapes only)."""
    from mmdistill.testing.tiny import random_checkpoint
    cfg = _tiny_dino()
    config = str(tmp_path / 'dino.py')
    cfg.dump(config)
    checkpoint = random_checkpoint(cfg.model, str(tmp_path / 'dino.pth'),
                                   scope='mmdet', init=False)
    distiller = build(ConfigDict(default_scope='mmdet', model=dict(
        type='mmdistill.SingleTeacherDistiller',
        student=cfg.model,
        teacher=dict(config=config, checkpoint=checkpoint),
        distill=dict(queries=dict(student='decoder.layers.1',
                                  teacher='decoder.layers.1',
                                  loss=dict(type='MSELoss'))))))
    with pytest.raises(ValueError) as err:
        forward(distiller)
    message = str(err.value)
    assert "pair 'queries' (student tap decoder.layers.1" in message
    assert 'The token counts differ (student ' in message
    found = re.search(r'The (\d+) extra student tokens are the denoising '
                      r'queries DINO adds in training', message)
    assert found and int(found.group(1)) > 0, message
    assert "tap the encoder (e.g. 'encoder.layers.5'" in message
