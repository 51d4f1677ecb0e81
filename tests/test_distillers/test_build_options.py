"""Build-time options of the distiller (issue 12): connector channels given
as ``'auto'`` (one dry run of both models), and the teacher normalising its
input its own way (``teacher.data_preprocessor='own'``)."""
import copy
import warnings

import pytest
import torch
from mmengine.model import ImgDataPreprocessor
from mmengine.registry import MODELS as ROOT_MODELS
from mmengine.registry import DefaultScope

from mmdistill.distillers.teacher import TeacherInput


def build(cfg):
    with DefaultScope.overwrite_default_scope(cfg.get('default_scope')):
        return ROOT_MODELS.build(copy.deepcopy(cfg.model))


def seg_batch(model):
    from mmdistill.testing import random_batch
    return model.data_preprocessor(
        random_batch('seg', (64, 64), 2, 19), True)


@pytest.mark.parametrize('name', ['pspnet', 'retinanet'])
def test_auto_channels_equal_the_numbers(tiny_cfg, name):
    cfg, _ = tiny_cfg(name)
    given = build(cfg)
    for pair in cfg.model.distill.values():
        pair['connector'].update(in_channels='auto', out_channels='auto')
    auto = build(cfg)
    assert list(auto.connectors) == list(given.connectors)
    for key, connector in given.connectors.items():
        for attr in ('in_channels', 'out_channels'):
            assert getattr(auto.connectors[key], attr) == \
                getattr(connector, attr), (key, attr)
        shapes = [p.shape for p in connector.parameters()]
        assert [p.shape for p in auto.connectors[key].parameters()] == shapes
    # the dry run leaves the student in training mode
    assert auto.student.training
    assert auto.shared_pairs == []


def test_auto_channels_need_a_channel_axis():
    from mmdistill.distillers.pairs import parse_pairs, resolve_channels
    pairs = parse_pairs(dict(p=dict(
        student='neck[{0-1}]', teacher='neck[{0-1}]',
        connector=dict(type='MLPConnector', in_channels='auto',
                       out_channels=8),
        loss=dict(type='L2Loss'))))
    calls = []

    def measure():
        calls.append(1)
        return dict(p_0=(4, 8), p_1=(None, 8))

    with pytest.raises(ValueError, match=r"distill\.p\.connector\.in_"
                       r"channels='auto' needs a feature with a channel"):
        resolve_channels(pairs, measure)
    assert calls == [1]  # one dry run for all pairs
    assert pairs['p_0'].connector['in_channels'] == 4
    assert pairs['p_0'].connector['out_channels'] == 8
    # no 'auto' anywhere: nothing runs
    resolve_channels(parse_pairs(dict(q=dict(
        student='a', teacher='b', loss=dict(type='L2Loss')))),
        lambda: pytest.fail('ran'))


def test_teacher_input_matches_the_teachers_own_preprocessor():
    g = torch.Generator().manual_seed(0)
    images = [torch.randint(0, 256, (3, 8, 10), generator=g,
                            dtype=torch.uint8) for _ in range(2)]
    student = ImgDataPreprocessor(mean=[123.675, 116.28, 103.53],
                                  std=[58.395, 57.12, 57.375],
                                  bgr_to_rgb=True)
    for teacher in (
            ImgDataPreprocessor(mean=[100., 110., 120.], std=[50., 60., 70.],
                                bgr_to_rgb=False),
            ImgDataPreprocessor(mean=[0., 0., 0.], std=[255., 255., 255.],
                                bgr_to_rgb=True),
            ImgDataPreprocessor()):  # no normalisation, BGR
        x_s = student(dict(inputs=images), False)['inputs']
        x_t = teacher(dict(inputs=images), False)['inputs']
        converted = TeacherInput(student, teacher)(x_s)
        assert torch.allclose(converted, x_t, atol=1e-4)
    same = TeacherInput(student, student)
    assert same.identity and same(x_s) is x_s


def test_own_preprocessing_in_the_distiller(tiny_cfg):
    cfg, _ = tiny_cfg('pspnet')
    overrides = dict(cfg.model.teacher.cfg_options or {})
    overrides['model.data_preprocessor.mean'] = [100., 110., 120.]
    overrides['model.data_preprocessor.std'] = [50., 60., 70.]
    overrides['model.data_preprocessor.bgr_to_rgb'] = False
    cfg.model.teacher.cfg_options = overrides
    with pytest.warns(UserWarning, match="data_preprocessor='own'"):
        build(cfg)
    cfg.model.teacher.data_preprocessor = 'own'
    with warnings.catch_warnings():
        warnings.simplefilter('error', UserWarning)
        try:
            model = build(cfg)
        except UserWarning as err:  # only ours would be about preprocessing
            assert 'preprocess' not in str(err)
            warnings.simplefilter('ignore')
            model = build(cfg)
    seen = {}
    model.teacher.backbone.register_forward_pre_hook(
        lambda m, args: seen.update(inputs=args[0]))
    from mmdistill.testing import random_batch
    raw = random_batch('seg', (64, 64), 2, 19)
    data = model.data_preprocessor(copy.deepcopy(raw), True)
    model.train()
    losses = model(data['inputs'], data['data_samples'], mode='loss')
    assert torch.isfinite(losses['loss_distill_stage4'])
    own = model.teacher.data_preprocessor(copy.deepcopy(raw), True)
    assert torch.allclose(seen['inputs'], own['inputs'], atol=1e-4)

    cfg.model.teacher.data_preprocessor = 'yes'
    with pytest.raises(ValueError, match="takes 'own'"):
        build(cfg)


def test_tat_pairs_share_embeddings(tiny_cfg):
    """``embeddings_from``: the anchor pair uses the patch-group pair's
    theta/phi/gamma, computed once per step; a wrong name stops the
    build with the key."""
    cfg, _ = tiny_cfg('pspnet')
    (pair, ) = cfg.model.distill.values()
    taps = dict(student=pair['student'], teacher=pair['teacher'])
    tat = dict(type='TaTConnector', in_channels='auto', out_channels='auto')
    cfg.model.distill = dict(
        patch_group=dict(
            **taps, loss=dict(type='MSELoss'),
            connector=dict(tat, mode='patch_group', patch_grid=(2, 2),
                           num_groups=2)),
        anchor=dict(
            **taps, loss=dict(type='MSELoss', loss_weight=0.4),
            connector=dict(tat, mode='anchor', anchor_size=(2, 2),
                           embeddings_from='patch_group')))
    distiller = build(cfg)
    group = distiller.connectors['patch_group']
    anchor = distiller.connectors['anchor']
    for name in ('query', 'value', 'key'):
        assert getattr(anchor, name) is getattr(group, name)
    assert distiller.shared_pairs == [['patch_group', 'anchor']]
    calls = []
    group.query.register_forward_hook(lambda *args: calls.append(1))
    losses = distiller.loss(**seg_batch(distiller))
    assert len(calls) == 1
    assert {'loss_distill_patch_group', 'loss_distill_anchor'} <= set(losses)

    # a chain names the pair that owns the embeddings
    cfg.model.distill.patch_group.connector.embeddings_from = 'anchor'
    with pytest.raises(ValueError, match=r"itself takes its embeddings from "
                       r"'patch_group': name that pair"):
        build(cfg)
    cfg.model.distill.patch_group.connector.pop('embeddings_from')
    cfg.model.distill.anchor.connector.embeddings_from = 'patch'
    with pytest.raises(ValueError, match=r"distill\.anchor\.connector\."
                       r"embeddings_from='patch' must name another pair"):
        build(cfg)
