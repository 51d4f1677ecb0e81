"""The distillation forward never reads a value back to the host.

On a GPU, ``.item()``, ``bool(tensor)`` (``if tensor:``), ``.tolist()``,
``.cpu()``, ``nonzero()``, ``float(tensor)`` or boolean-mask indexing wait
until every queued kernel has run, so the host stops feeding the GPU. These
tests wrap those ``torch.Tensor`` methods (and the ``torch`` functions that
do the same) with counters and run, on the CPU, one ``loss()`` of a
distiller built from a shipped config with its real models shrunk
(``mmdistill.testing``): the count of the distiller's ``loss()`` must equal
the count of the student's own ``loss()`` on the same batch, i.e. the
teacher, the taps, the connectors, the losses and the masks add none. A
deliberately synchronising loss shows that the count sees a read-back made
inside a distillation loss.
"""
import collections
import contextlib
import copy
import os.path as osp

import pytest
import torch
from mmengine.config import Config
from mmengine.registry import MODELS as ROOT_MODELS
from mmengine.registry import DefaultScope

from mmdistill.registry import MODELS
from mmdistill.testing import (random_batch, random_checkpoint,
                               teacher_overrides, tiny_model)
from mmdistill.utils.config import load_config

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))

# Tensor methods that read values back to the host (or need them there).
SYNC_METHODS = ('item', 'tolist', 'cpu', 'numpy', '__bool__', 'nonzero',
                '__float__', '__int__', '__index__', 'masked_select',
                'equal', 'allclose', 'unique', 'bincount')
# torch functions with the same effect.
SYNC_FUNCTIONS = ('nonzero', 'masked_select', 'equal', 'allclose', 'unique',
                  'bincount', 'argwhere')


def _is_mask(index) -> bool:
    """Whether an index holds a boolean (or uint8) tensor: indexing with it
    has a data-dependent shape, computed on the host."""
    items = index if isinstance(index, tuple) else (index, )
    return any(
        isinstance(i, torch.Tensor) and i.dtype in (torch.bool, torch.uint8)
        for i in items)


@contextlib.contextmanager
def count_syncs():
    """Count the synchronising tensor calls made inside the block (by
    name, in a ``collections.Counter``)."""
    counter = collections.Counter()
    restore = []

    def patch(owner, name, when=None):
        original = getattr(owner, name)
        had = name in vars(owner)

        def wrapper(*args, **kwargs):
            if when is None or when(*args, **kwargs):
                counter[name] += 1
            return original(*args, **kwargs)

        setattr(owner, name, wrapper)
        restore.append((owner, name, original, had))

    for name in SYNC_METHODS:
        if hasattr(torch.Tensor, name):
            patch(torch.Tensor, name)
    for name in SYNC_FUNCTIONS:
        patch(torch, name)
    patch(torch.Tensor, '__getitem__',
          lambda self, index, *rest: _is_mask(index))
    patch(torch.Tensor, '__setitem__',
          lambda self, index, *rest: _is_mask(index))
    try:
        yield counter
    finally:
        for owner, name, original, had in reversed(restore):
            if had:
                setattr(owner, name, original)
            else:
                delattr(owner, name)


def test_the_counter_sees_each_kind_of_read_back():
    x = torch.arange(6.0)
    with count_syncs() as counter:
        x.sum().item()
        x.tolist()
        x.cpu()
        if x.sum() > 0:
            pass
        x.nonzero()
        torch.nonzero(x)
        float(x[0])
        int(x[1])
        x[x > 2]
        x[x > 2] = 0
        x[1:3]  # plain slicing: not counted
        x[torch.tensor([0, 1])]  # integer indices: not counted
        torch.where(x > 1, x, x.new_zeros(()))  # not counted
    assert counter == {'item': 1, 'tolist': 1, 'cpu': 1, '__bool__': 1,
                       'nonzero': 2, '__float__': 1, '__int__': 1,
                       '__getitem__': 1, '__setitem__': 1}
    # the wrappers are gone afterwards
    x.sum().item()
    assert counter['item'] == 1
    assert 'item' not in vars(torch.Tensor)


# ------------------------------------------------------------ configs ---
CONFIGS = {
    'mlp_l2_pspnet':
    'configs/mlp/mlp_backbone_pspnet-r101_pspnet-r18_80k_cityscapes-'
    '512x1024.py',
    'mlp_l2_retinanet':
    'configs/mlp/mlp_fpn_retinanet-x101_retinanet-r50_2x_coco.py',
    'cwd_logits_pspnet':
    'configs/cwd/cwd_logits_pspnet-r101_pspnet-r18_80k_cityscapes-'
    '512x1024.py',
    'cwd_fpn_retinanet':
    'configs/cwd/cwd_fpn_retinanet-x101_retinanet-r50_2x_coco.py',
    'fgd_retinanet':
    'configs/fgd/fgd_fpn_retinanet-x101_retinanet-r50_2x_coco.py',
    'mgd_retinanet':
    'configs/mgd/mgd_fpn_retinanet-x101_retinanet-r50_2x_coco.py',
    'tat_pspnet':
    'configs/tat/tat_backbone_pspnet-r101_pspnet-r18_80k_cityscapes-'
    '512x1024.py',
    'lad_pixel_kd_pspnet':
    'configs/angular/lad_backbone_pspnet-r101_pspnet-r18_80k_cityscapes-'
    '512x1024.py',
    'cad_pixel_kd_pspnet':
    'configs/angular/cad_backbone_pspnet-r101_pspnet-r18_80k_cityscapes-'
    '512x1024.py',
}
# shrunken widths: the FPN outputs of both detectors, the last ResNet stage
# of the segmentation student (width 8) and teacher (width 16)
FPN_CHANNELS = 16
STAGE4 = (64, 128)
# 128 x 128 inputs: a 16 x 16 last stage (TaT's 16 x 16 patch grid divides
# it); detection batches: 128 x 96
SIZE = dict(det=(96, 128), seg=(128, 128))


def _no_sync_bn(node) -> None:
    """SyncBN -> BN in a config (a CPU process has no process group)."""
    if isinstance(node, dict):
        if node.get('type') in ('SyncBN', 'MMSyncBN'):
            node['type'] = 'BN'
        for value in node.values():
            _no_sync_bn(value)
    elif isinstance(node, (list, tuple)):
        for value in node:
            _no_sync_bn(value)


def _fit_channels(distill: dict) -> None:
    for spec in distill.values():
        tap = str(spec['student'])
        if tap.startswith('neck'):
            channels = (FPN_CHANNELS, FPN_CHANNELS)
        elif tap.startswith('backbone'):
            channels = STAGE4
        else:  # logits keep their classes
            continue
        connector = spec.get('connector')
        if connector is not None:
            connector.in_channels, connector.out_channels = channels
        if spec['loss']['type'] == 'FGDLoss':
            spec['loss']['in_channels'] = channels[1]


@pytest.fixture(scope='module')
def build_distiller(tmp_path_factory):
    """``build_distiller(name) -> (distiller, kind)``: the shipped config
    with shrunken student and teacher (random weights), in training mode."""
    root = tmp_path_factory.mktemp('no_host_sync')

    def build(name):
        cfg = Config.fromfile(osp.join(ROOT, CONFIGS[name]))
        kind = 'det' if 'retinanet' in name else 'seg'
        extra = dict(fpn_channels=FPN_CHANNELS) if kind == 'det' else dict(
            crop=SIZE['seg'])
        cfg.model.student = tiny_model(cfg.model.student, kind, width=8,
                                       **extra)
        teacher_cfg = load_config(cfg.model.teacher.config)
        teacher = tiny_model(teacher_cfg.model, kind, width=16, **extra)
        _no_sync_bn(teacher)
        _fit_channels(cfg.model.distill)
        model = cfg.model.to_dict()
        _no_sync_bn(model)
        model['teacher']['checkpoint'] = random_checkpoint(
            teacher, str(root / f'{name}_teacher.pth'),
            scope=teacher_cfg.default_scope)
        model['teacher']['cfg_options'] = teacher_overrides(teacher)
        with DefaultScope.overwrite_default_scope(cfg.get('default_scope')):
            distiller = ROOT_MODELS.build(copy.deepcopy(model))
        return distiller.train(), kind

    return build


def _batch(distiller, kind: str, seed: int):
    """A new preprocessed batch (new data sample objects each time, as a
    data loader gives)."""
    raw = random_batch(kind, SIZE[kind], batch=2, seed=seed)
    data = distiller.data_preprocessor(raw, True)
    return data['inputs'], data['data_samples']


def _count(fn, inputs, samples):
    torch.manual_seed(0)  # same dropout and sampling in both runs
    with count_syncs() as counter:
        fn(inputs, samples)
    return counter


def _distillation_syncs(distiller, kind: str) -> dict:
    """Syncs of ``distiller.loss()`` minus those of the student's own
    ``loss()``, on the same batch (after one uncounted warm-up of each)."""
    inputs, samples = _batch(distiller, kind, seed=0)
    distiller.student.loss(inputs, samples)
    distiller.loss(inputs, samples)
    inputs, samples = _batch(distiller, kind, seed=1)
    student = _count(distiller.student.loss, inputs, samples)
    inputs, samples = _batch(distiller, kind, seed=1)
    total = _count(distiller.loss, inputs, samples)
    names = set(total) | set(student)
    return {k: total[k] - student[k] for k in names if total[k] != student[k]}


@pytest.mark.parametrize('name', sorted(CONFIGS))
def test_distillation_adds_no_host_sync(name, build_distiller):
    distiller, kind = build_distiller(name)
    losses = distiller.loss(*_batch(distiller, kind, seed=2))
    assert any(k.startswith('loss_distill_') for k in losses)
    extra = _distillation_syncs(distiller, kind)
    assert not extra, (
        f'{name}: the distillation adds host read-backs {extra} to '
        'the student\'s own loss()')


@MODELS.register_module(force=True)
class _ReadBackL2Loss(torch.nn.Module):
    """An L2 loss that reads its value back (``.item()``) and branches on a
    tensor: what the test must catch."""

    def forward(self, student, teacher, data_samples=None):
        value = (student - teacher.detach()).pow(2).sum()
        if value > 0:
            value.item()
        return value


def test_a_read_back_in_a_loss_is_counted(build_distiller):
    distiller, kind = build_distiller('mlp_l2_pspnet')
    distiller.distill_losses['stage4'] = _ReadBackL2Loss()
    extra = _distillation_syncs(distiller, kind)
    assert extra == {'__bool__': 1, 'item': 1}


# ------------------------------------------ connectors, losses, masks ---
def _det_samples(shape=(64, 96)):
    from mmdet.structures import DetDataSample
    from mmengine.structures import InstanceData
    out = []
    for boxes in ([[4.0, 4.0, 40.0, 30.0], [30.0, 10.0, 96.0, 64.0]], []):
        sample = DetDataSample(metainfo=dict(batch_input_shape=shape))
        sample.gt_instances = InstanceData(
            bboxes=torch.tensor(boxes).reshape(-1, 4),
            labels=torch.zeros(len(boxes), dtype=torch.long))
        out.append(sample)
    return out


def _seg_samples(size=(16, 24)):
    return random_batch('seg', size, batch=2)['data_samples']


# (name, connector config or None, loss config, student channels, teacher
# channels, map size, data samples)
COMPONENTS = [
    ('tat_global_heads', dict(type='TaTConnector', in_channels=4,
                              out_channels=8, num_heads=2),
     dict(type='MSELoss'), 4, 8, (6, 7), None),
    ('tat_patch_group_overlap',
     dict(type='TaTConnector', in_channels=4, out_channels=8,
          mode='patch_group', patch_grid=(3, 4), num_groups=2),
     dict(type='MSELoss'), 4, 8, (7, 10), None),
    ('tat_anchor_upsample_uneven',
     dict(type='TaTConnector', in_channels=4, out_channels=8, mode='anchor',
          anchor_size=(3, 4)), dict(type='MSELoss'), 4, 8, (7, 10), None),
    ('tat_keep_attention', dict(type='TaTConnector', in_channels=4,
                                out_channels=8, keep_attention=True),
     dict(type='MSELoss'), 4, 8, (6, 7), None),
    ('mlp_l2', dict(type='MLPConnector', in_channels=4, out_channels=8),
     dict(type='L2Loss'), 4, 8, (6, 7), None),
    ('mgd', dict(type='MGDConnector', in_channels=4, out_channels=8),
     dict(type='MGDLoss', loss_weight=2e-5), 4, 8, (6, 7), None),
    ('non_local', dict(type='NonLocalConnector', in_channels=4,
                       out_channels=8), dict(type='L2Loss'), 4, 8, (6, 7),
     None),
    ('conv_angular_layer', dict(type='ConvConnector', in_channels=4,
                                out_channels=8, kernel_size=1),
     dict(type='AngularLoss', mode='layer'), 4, 8, (6, 7), None),
    ('angular_channel', None, dict(type='AngularLoss', mode='channel'), 8, 8,
     (6, 7), None),
    ('angular_point', None, dict(type='AngularLoss', mode='point'), 8, 8,
     (6, 7), None),
    ('magnitude', None, dict(type='MagnitudeLoss'), 8, 8, (6, 7), None),
    ('at', None, dict(type='ATLoss'), 4, 8, (6, 7), None),
    ('cwd', None, dict(type='ChannelWiseDivergence', tau=4.0), 8, 8, (6, 7),
     None),
    ('pixel_kl_ignore', None, dict(type='PixelKLDivergence'), 19, 19,
     (16, 24), 'seg'),
    ('fgd_no_box_image', None, dict(type='FGDLoss', in_channels=8,
                                    student_channels=4), 4, 8, (8, 12),
     'det'),
]


@pytest.mark.parametrize('name,connector,loss,c_s,c_t,size,samples',
                         COMPONENTS, ids=[c[0] for c in COMPONENTS])
def test_components_read_nothing_back(name, connector, loss, c_s, c_t, size,
                                      samples):
    import warnings
    torch.manual_seed(0)
    # in the mmdistill scope whatever scope an earlier test left current
    with DefaultScope.overwrite_default_scope('mmdistill'):
        connector = MODELS.build(connector) if connector else None
        loss = MODELS.build(loss)
    data_samples = dict(seg=_seg_samples, det=_det_samples).get(
        samples, lambda: None)()
    student = torch.randn(2, c_s, *size, requires_grad=True)
    teacher = torch.randn(2, c_t, *size)
    for step in range(2):  # the second call: caches filled
        with count_syncs() as counter, warnings.catch_warnings():
            warnings.simplefilter('ignore')
            out = student
            target = teacher
            if connector is not None:
                out = connector(student, teacher)
                target = connector.teacher_target(teacher) if hasattr(
                    connector, 'teacher_target') else teacher
            value = loss(out, target, data_samples=data_samples)
        assert not counter, f'{name}: {dict(counter)}'
        assert value.dim() == 0 and torch.isfinite(value)
        value.backward()


def _gpu_style_check(ok, message, error=ValueError):
    """``check_values`` as it runs on a GPU (queued, never read back)."""
    torch._assert_async(ok.all() if ok.numel() != 1 else ok.reshape(()),
                        message)


LOGIT_LOSSES = [
    ('kd', dict(type='KDLoss', tau=4.0), 'label'),
    ('dkd_label', dict(type='DKDLoss', tau=4.0, beta=2.0), 'label'),
    ('dkd_score', dict(type='DKDLoss', tau=1.0, beta=0.5), 'score'),
    ('dist', dict(type='DISTLoss', tau=1.0), 'label'),
]


@pytest.mark.parametrize('name,loss,target', LOGIT_LOSSES,
                         ids=[c[0] for c in LOGIT_LOSSES])
def test_logit_losses_read_nothing_back(name, loss, target, monkeypatch):
    from types import SimpleNamespace

    import mmdistill.losses.dkd as dkd
    monkeypatch.setattr(dkd, 'check_values', _gpu_style_check)
    torch.manual_seed(0)
    with DefaultScope.overwrite_default_scope('mmdistill'):
        loss = MODELS.build(loss)
    labels = torch.tensor([3, 0, 9, 5])
    if target == 'label':
        samples = [SimpleNamespace(gt_label=label[None]) for label in labels]
    else:  # a Mixup score, as mmpretrain's batch augments write it
        scores = 0.3 * torch.eye(10)[labels.roll(1)] + 0.7 * torch.eye(10)[
            labels]
        samples = [SimpleNamespace(gt_score=score) for score in scores]
    student = torch.randn(4, 10, requires_grad=True)
    teacher = torch.randn(4, 10)
    with count_syncs() as counter:
        value = loss(student, teacher, data_samples=samples)
    assert not counter, f'{name}: {dict(counter)}'
    value.backward()
    assert torch.isfinite(student.grad).all()
