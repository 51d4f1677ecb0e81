"""Tests of ComposableLoss (KD-Zero): the dedicated losses it must
reproduce, and each transform, distance and weighting against an independent
numpy computation in float64."""
import math

import numpy as np
import pytest
import torch
from mmengine.structures import PixelData

from mmdistill.losses import (AngularLoss, ChannelWiseDivergence,
                              ComposableLoss, L2Loss)
from mmdistill.registry import MODELS


def _pair(shape=(2, 3, 4, 6), seed=0, scale=2.0):
    g = torch.Generator().manual_seed(seed)
    s = torch.randn(*shape, generator=g, dtype=torch.float64)
    t = scale * torch.randn(*shape, generator=g, dtype=torch.float64)
    return s, t


def _close(a, b, rel=1e-6):
    a, b = (float(v.detach()) if torch.is_tensor(v) else float(v)
            for v in (a, b))
    assert abs(a - b) <= rel * max(abs(b), 1e-12), (a, b)


def _np_softmax(x, axis):
    x = x - x.max(axis=axis, keepdims=True)
    e = np.exp(x)
    return e / e.sum(axis=axis, keepdims=True)


# ---------------------------------------- the dedicated losses, reproduced


@pytest.mark.parametrize('tau,weight', [(1.0, 5.0), (4.0, 3.0)])
def test_cwd_is_kl_over_positions(tau, weight):
    s, t = _pair()
    s.requires_grad_(True)
    composed = ComposableLoss(
        distance=dict(type='kl', dims='hw'), tau=tau, loss_weight=weight)
    dedicated = ChannelWiseDivergence(tau=tau, loss_weight=weight)
    a, b = composed(s, t), dedicated(s, t)
    _close(a, b, 1e-10)
    ga, = torch.autograd.grad(a, s)
    gb, = torch.autograd.grad(b, s)
    assert torch.allclose(ga, gb, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize('mode,dims', [('layer', 'chw'), ('channel', 'hw'),
                                       ('point', 'c')])
def test_angular_lad_cad_pad(mode, dims):
    s, t = _pair(seed=3)
    composed = ComposableLoss(
        transforms=[dict(type='l2_normalize', dims=dims)],
        distance=dict(type='l2', dims=dims),
        loss_weight=10.0)
    _close(composed(s, t), AngularLoss(mode=mode, loss_weight=10.0)(s, t),
           1e-10)


def test_feature_l2_of_mlp_connector_paper():
    s, t = _pair(seed=4)
    composed = ComposableLoss(distance='l2', reduction='batch',
                              loss_weight=2e-5)
    _close(composed(s, t), L2Loss(loss_weight=2e-5)(s, t), 1e-10)


def test_registered_and_built_from_config():
    loss = MODELS.build(
        dict(type='ComposableLoss', transforms=['abs'], distance='l1'))
    assert isinstance(loss, ComposableLoss)


# ------------------------------------------------------------- distances


@pytest.mark.parametrize('name', ['l1', 'l2', 'smooth_l1'])
def test_elementwise_distances_summed_over_dims(name):
    s, t = _pair(seed=5)
    d = (s - t).numpy()
    per_element = dict(
        l1=np.abs(d), l2=d**2,
        smooth_l1=np.where(np.abs(d) < 1, 0.5 * d**2, np.abs(d) - 0.5))[name]
    # summed over channels, mean over (n, h, w), temperature 2
    loss = ComposableLoss(
        distance=dict(type=name, dims='c'), tau=2.0)(s, t)
    s2, t2 = s.numpy() / 2, t.numpy() / 2
    d2 = s2 - t2
    per = dict(
        l1=np.abs(d2), l2=d2**2,
        smooth_l1=np.where(np.abs(d2) < 1, 0.5 * d2**2,
                           np.abs(d2) - 0.5))[name]
    _close(loss, 4 * per.sum(axis=1).mean())
    # no dims, no temperature: the elementwise mean
    _close(ComposableLoss(distance=name)(s, t), per_element.mean())


def test_kl_over_classes_and_on_probabilities():
    s, t = _pair((4, 5), seed=6)
    p_s = _np_softmax(s.numpy(), 1)
    p_t = _np_softmax(t.numpy(), 1)
    kl = (p_t * (np.log(p_t) - np.log(p_s))).sum(1).mean()
    _close(ComposableLoss(distance=dict(type='kl', dims='c'))(s, t), kl)
    # softmax as a transform, then KL on probabilities: same number
    probs = ComposableLoss(
        transforms=[dict(type='softmax', dims='c')],
        distance=dict(type='kl', dims='c', inputs='probs'))
    _close(probs(s, t), kl)


@pytest.mark.parametrize('name', ['cosine', 'pearson'])
def test_cosine_and_pearson_per_position(name):
    s, t = _pair(seed=7)
    sn, tn = s.numpy(), t.numpy()
    ref = []
    for i in range(sn.shape[0]):
        for y in range(sn.shape[2]):
            for x in range(sn.shape[3]):
                a, b = sn[i, :, y, x], tn[i, :, y, x]
                if name == 'pearson':
                    ref.append(1 - np.corrcoef(a, b)[0, 1])
                else:
                    ref.append(1 - a @ b / np.linalg.norm(a) /
                               np.linalg.norm(b))
    loss = ComposableLoss(distance=dict(type=name, dims='c'))(s, t)
    _close(loss, np.mean(ref))


def test_correlation_distance_eq_12():
    s, t = _pair((6, 3, 2, 2), seed=8)
    a = s.numpy().reshape(6, -1)
    b = t.numpy().reshape(6, -1)
    a = (a - a.mean(0)) / a.std(0, ddof=1)
    b = (b - b.mean(0)) / b.std(0, ddof=1)
    v = np.array([a[:, i] @ b[:, i] for i in range(a.shape[1])]) / 6
    ref = math.log2(np.sum(np.abs(v - 1)**(2 * 1.01)))
    loss = ComposableLoss(distance='correlation', loss_weight=0.5)(s, t)
    _close(loss, 0.5 * ref, 1e-5)
    with pytest.raises(ValueError, match='batch of at least 2'):
        ComposableLoss(distance='correlation')(s[:1], t[:1])


# ------------------------------------------------------------ transforms


def test_attention_transforms_follow_fgd():
    s, t = _pair(seed=9)
    tau = 0.5
    loss = ComposableLoss(
        transforms=[dict(type='spatial_attention', tau=tau)],
        distance='l1')(s, t)
    sn, tn = s.numpy(), t.numpy()

    def a_s(f):
        g = np.abs(f).mean(axis=1).reshape(f.shape[0], -1)
        return f.shape[2] * f.shape[3] * _np_softmax(g / tau, 1)

    _close(loss, np.abs(a_s(sn) - a_s(tn)).mean())

    def a_c(f):
        g = np.abs(f).mean(axis=(2, 3))
        return f.shape[1] * _np_softmax(g / tau, 1)

    loss = ComposableLoss(transforms=['channel_attention'],
                          distance='l2')(s, t)
    _close(loss, ((a_c(sn) - a_c(tn))**2).mean())


def test_multi_scale_local_gram_pool():
    s, t = _pair((2, 3, 4, 4), seed=10)
    sn, tn = s.numpy(), t.numpy()

    def pyramid(f):
        cells = []
        for k in (1, 2, 4):
            step = 4 // k
            for y in range(k):
                for x in range(k):
                    cells.append(f[:, :, y * step:(y + 1) * step,
                                   x * step:(x + 1) * step].max(axis=(2, 3)))
        return np.stack(cells, axis=2)  # (N, C, 21)

    loss = ComposableLoss(transforms=['multi_scale'], distance='l2')(s, t)
    _close(loss, ((pyramid(sn) - pyramid(tn))**2).mean())

    def patches(f):
        out = []
        for c in range(3):
            for y in range(2):
                for x in range(2):
                    out.append(f[:, c, 2 * y:2 * y + 2, 2 * x:2 * x + 2])
        return np.stack(out, axis=1)  # (N, 12, 2, 2)

    local = ComposableLoss(transforms=[dict(type='local', size=2)],
                           distance=dict(type='cosine', dims='hw'))
    ps, pt = patches(sn), patches(tn)
    ref = 1 - (ps * pt).sum((2, 3)) / np.sqrt(
        (ps**2).sum((2, 3)) * (pt**2).sum((2, 3)))
    _close(local(s, t), ref.mean())

    def gram(f):
        flat = f.reshape(2, 3, -1)
        return np.einsum('ncp,ndp->ncd', flat, flat)

    loss = ComposableLoss(transforms=['gram', 'l2_normalize'],
                          distance=dict(type='l2', dims='chw'))(s, t)
    gs, gt = gram(sn), gram(tn)
    gs = gs / np.linalg.norm(gs.reshape(2, -1), axis=1)[:, None, None]
    gt = gt / np.linalg.norm(gt.reshape(2, -1), axis=1)[:, None, None]
    _close(loss, ((gs - gt)**2).sum(axis=(1, 2)).mean())

    loss = ComposableLoss(transforms=[dict(type='gram', over='sample')],
                          distance='l1', reduction='sum')(s, t)
    fs, ft = sn.reshape(2, -1), tn.reshape(2, -1)
    _close(loss, np.abs(fs @ fs.T - ft @ ft.T).sum())

    pooled = ComposableLoss(transforms=[dict(type='pool', ratio=2,
                                             mode='avg')],
                            distance='l2')(s, t)
    avg = lambda f: f.reshape(2, 3, 2, 2, 2, 2).mean(axis=(3, 5))  # noqa
    _close(pooled, ((avg(sn) - avg(tn))**2).mean())


def test_elementwise_transform_chain_and_softmax_axes():
    s, t = _pair(seed=11)
    loss = ComposableLoss(
        transforms=['abs', 'sqrt', dict(type='softmax', dims='hw')],
        distance='l1', reduction='sum')(s, t)

    def chain(f):
        g = np.sqrt(np.abs(f)).reshape(2, 3, -1)
        return _np_softmax(g, 2)

    _close(loss, np.abs(chain(s.numpy()) - chain(t.numpy())).sum())
    signed = ComposableLoss(transforms=['log'], distance='l1')
    ref = np.abs(np.sign(s.numpy()) * np.log(np.abs(s.numpy()) + 1e-9) -
                 np.sign(t.numpy()) * np.log(np.abs(t.numpy()) + 1e-9))
    _close(signed(s, t), ref.mean())


def test_random_mask_covers_the_student_only():
    torch.manual_seed(12)
    t = torch.full((4, 2, 16, 16), 2.0, dtype=torch.float64)
    s = torch.ones(4, 2, 16, 16, dtype=torch.float64, requires_grad=True)
    loss = ComposableLoss(transforms=[dict(type='random_mask', ratio=0.5)],
                          distance='l1')(s, t)
    # masked student positions are 0 against a teacher of 2 (|0 - 2| = 2),
    # the others 1 (|1 - 2|): loss = 1 + masked fraction; a mask on the
    # teacher would give 1 - masked fraction
    assert 1.4 < loss.item() < 1.6
    loss.backward()
    masked = s.grad == 0
    assert 0.4 < masked.double().mean() < 0.6
    # one spatial mask for all channels of a position
    assert torch.equal(masked[:, 0], masked[:, 1])
    with pytest.raises(ValueError, match=r'\[0, 1\]'):
        ComposableLoss(transforms=[dict(type='random_mask', ratio=1.5)])


# ------------------------------------------------------------ weightings


def test_teacher_entropy_confidence_similarity_weights():
    s, t = _pair((3, 4, 2, 2), seed=13)
    sn, tn = s.numpy(), t.numpy()
    d = ((sn - tn)**2).sum(axis=1)  # l2 over classes, (N, H, W)
    p_t = _np_softmax(tn, 1)
    entropy = -(p_t * np.log(p_t)).sum(axis=1) / math.log(4)
    confidence = p_t.max(axis=1)
    cos = (sn * tn).sum(1) / np.sqrt((sn**2).sum(1) * (tn**2).sum(1))
    cos = np.maximum(cos, 0)
    for name, w in (('teacher_entropy', entropy), ('confidence', confidence),
                    ('similarity', cos)):
        loss = ComposableLoss(distance=dict(type='l2', dims='c'),
                              weighting=name)(s, t)
        _close(loss, (w * d).mean())


def _seg_samples(labels):
    from mmseg.structures import SegDataSample
    out = []
    for label in labels:
        sample = SegDataSample()
        sample.gt_sem_seg = PixelData(data=torch.as_tensor(label)[None])
        out.append(sample)
    return out


def test_focal_weight_per_pixel_with_ignored_pixels():
    s, t = _pair((2, 3, 4, 4), seed=14)
    g = np.random.default_rng(0)
    labels = g.integers(0, 3, size=(2, 8, 8))
    labels[0, :2] = 255
    loss = ComposableLoss(
        distance=dict(type='kl', dims='c'), weighting='focal')(
            s, t, _seg_samples(labels))
    small = labels[:, ::2, ::2]  # nearest resize of 8x8 labels to 4x4
    log_ps = np.log(_np_softmax(s.numpy(), 1))
    log_pt = np.log(_np_softmax(t.numpy(), 1))
    kl = (np.exp(log_pt) * (log_pt - log_ps)).sum(axis=1)
    ref = np.zeros_like(kl)
    for n in range(2):
        for y in range(4):
            for x in range(4):
                k = small[n, y, x]
                if k == 255:
                    continue
                ratio = max(-log_ps[n, k, y, x] / (-log_pt[n, k, y, x] +
                                                   1e-7), 0)
                ref[n, y, x] = (1 - math.exp(-ratio)) * kl[n, y, x]
    # the mean runs over the labelled pixels only
    _close(loss, ref.sum() / (small != 255).sum())
    assert (small == 255).any()


def test_focal_weight_per_sample_with_class_labels():
    from mmpretrain.structures import DataSample
    s, t = _pair((3, 5), seed=15)
    samples = [DataSample().set_gt_label(k) for k in (0, 4, 2)]
    loss = ComposableLoss(distance=dict(type='kl', dims='c'),
                          weighting='focal')(s, t, samples)
    log_ps = np.log(_np_softmax(s.numpy(), 1))
    log_pt = np.log(_np_softmax(t.numpy(), 1))
    kl = (np.exp(log_pt) * (log_pt - log_ps)).sum(axis=1)
    w = [1 - math.exp(-log_ps[i, k] / (log_pt[i, k] - 1e-7))
         for i, k in enumerate((0, 4, 2))]
    _close(loss, np.mean(np.array(w) * kl))


# --------------------------------------------------- properties and errors


def test_zero_at_equal_inputs_and_gradients_to_student_only():
    s, t = _pair(seed=16)
    for cfg in (dict(distance=dict(type='kl', dims='hw')),
                dict(transforms=['spatial_attention'], distance='l1'),
                dict(distance=dict(type='pearson', dims='c'))):
        assert abs(ComposableLoss(**cfg)(t.clone(), t).item()) < 1e-12
    s.requires_grad_(True)
    t.requires_grad_(True)
    loss = ComposableLoss(transforms=['abs'], distance=dict(type='l2',
                                                            dims='c'),
                          weighting='similarity')(s, t)
    loss.backward()
    assert s.grad is not None and s.grad.abs().sum() > 0
    assert t.grad is None


def test_half_precision_and_2d_3d_inputs():
    s, t = _pair((2, 3, 5), seed=17)
    loss = ComposableLoss(distance=dict(type='kl', dims='h'))
    ref = loss(s, t)
    half = loss(s.half(), t.half())
    assert half.dtype == torch.float32
    _close(half, ref, 1e-2)


def test_zero_vectors_have_finite_gradients():
    # a dead channel or position (after a ReLU) is an exact zero vector
    s, t = _pair(seed=18)
    s = torch.relu(s)
    s[:, 1] = 0
    s.requires_grad_(True)
    for cfg in (dict(transforms=['abs', 'sqrt'], distance='l2'),
                dict(transforms=[dict(type='l2_normalize', dims='hw')],
                     distance=dict(type='l2', dims='hw')),
                dict(distance=dict(type='cosine', dims='hw')),
                dict(distance=dict(type='pearson', dims='hw'))):
        s.grad = None
        ComposableLoss(**cfg)(s, t).backward()
        assert torch.isfinite(s.grad).all(), cfg
    # CAD gradients equal AngularLoss's, dead channel included
    s.grad = None
    ComposableLoss(transforms=[dict(type='l2_normalize', dims='hw')],
                   distance=dict(type='l2', dims='hw'))(s, t).backward()
    composed = s.grad.clone()
    s.grad = None
    AngularLoss(mode='channel')(s, t).backward()
    assert torch.allclose(composed, s.grad, atol=1e-12)


def test_class_255_is_a_class_and_similarity_weights_are_not_negative():
    from mmpretrain.structures import DataSample
    s, t = _pair((2, 300), seed=19)
    samples = [DataSample().set_gt_label(255) for _ in range(2)]
    loss = ComposableLoss(distance=dict(type='kl', dims='c'),
                          weighting='focal')(s, t, samples)
    assert loss.item() > 0
    # a student opposite to the teacher gets weight 0, never a negative
    # loss that would push it further away
    loss = ComposableLoss(distance=dict(type='l2', dims='c'),
                          weighting='similarity')(-t, t)
    assert loss.item() == 0.0


def test_clear_errors():
    with pytest.raises(ValueError, match="did you mean 'softmax'"):
        ComposableLoss(transforms=['sofmax'])
    with pytest.raises(ValueError, match='letters of "nchw"'):
        ComposableLoss(distance=dict(type='l2', dims='xy'))
    with pytest.raises(ValueError, match='needs dims'):
        ComposableLoss(distance='kl')(*_pair())
    with pytest.raises(ValueError, match='takes no weighting'):
        ComposableLoss(distance='correlation', weighting='focal')
    with pytest.raises(ValueError, match='does not fit the distance'):
        ComposableLoss(distance=dict(type='kl', dims='hw'),
                       weighting='confidence')(*_pair())
    with pytest.raises(ValueError, match='gt_label .* or gt_sem_seg'):
        from mmdet.structures import DetDataSample
        ComposableLoss(distance=dict(type='kl', dims='c'),
                       weighting='focal')(*_pair((2, 3)),
                                          [DetDataSample(), DetDataSample()])
    with pytest.raises(ValueError, match='does not split'):
        ComposableLoss(transforms=[dict(type='local', size=4)])(
            *_pair((1, 2, 6, 6)))
    with pytest.raises(ValueError, match=r"takes \['dims'\], got unknown"):
        ComposableLoss(transforms=[dict(type='softmax', dim='c')])
    with pytest.raises(ValueError, match="'focal' takes"):
        ComposableLoss(weighting=dict(type='focal', ignore_idx=-1))
    with pytest.raises(ValueError, match='a ground-truth label is larger'):
        from mmpretrain.structures import DataSample
        ComposableLoss(distance=dict(type='kl', dims='c'),
                       weighting='focal')(*_pair((1, 5)),
                                          [DataSample().set_gt_label(7)])
    with pytest.raises(ValueError, match='inputs="logits" for a tempered'):
        ComposableLoss(transforms=[dict(type='softmax', dims='c')],
                       distance=dict(type='kl', dims='c', inputs='probs'),
                       tau=4.0)(*_pair((2, 5)))
    with pytest.raises(ValueError, match='equal shapes'):
        ComposableLoss()(torch.zeros(1, 2, 3, 3), torch.zeros(1, 3, 3, 3))


# ------------------------------------------------- in the distiller / Runner


def test_focal_weighted_logit_kl_trains_a_pspnet_in_the_runner(tiny_cfg):
    """The distiller hands the batch's data samples (with gt_sem_seg) to the
    loss: a focal-weighted pixel KL on PSPNet logits trains in the Runner."""
    from mmengine.runner import Runner
    cfg, _ = tiny_cfg('pspnet', iters=2)
    cfg.model.distill = dict(
        logits=dict(
            student='decode_head.conv_seg',
            teacher='decode_head.conv_seg',
            loss=dict(type='ComposableLoss',
                      distance=dict(type='kl', dims='c'),
                      weighting='focal', tau=2.0, loss_weight=3.0)))
    runner = Runner.from_cfg(cfg)
    runner.train()
    value = runner.message_hub.log_scalars['train/loss_distill_logits']
    assert math.isfinite(value.current()) and value.current() > 0
