"""FGDLoss against an independent float64 computation.

The reference recomputes every piece by hand: the attention with explicit
exp / sum, the box masks with loops over boxes and cells, and the GcBlocks
with einsum from the module's parameters (which are randomised first, since
the official initialisation zeroes the transform's last conv).
"""
import math

import pytest
import torch
from mmdet.structures import DetDataSample
from mmengine.structures import InstanceData

from mmdistill.losses.fgd import FGDLoss
from mmdistill.registry import MODELS

RETINA = dict(alpha=1e-3, beta=5e-4, gamma=5e-4, lambda_=5e-6)


def _samples(boxes, batch_input_shape=(128, 128)):
    out = []
    for b in boxes:
        s = DetDataSample(metainfo=dict(batch_input_shape=batch_input_shape))
        s.gt_instances = InstanceData(
            bboxes=torch.as_tensor(b, dtype=torch.float32).reshape(-1, 4),
            labels=torch.zeros(len(b), dtype=torch.long))
        out.append(s)
    return out


def _ref_masks(bboxes, shape, h, w):
    n = len(bboxes)
    fg = torch.zeros(n, h, w, dtype=torch.float64)
    bg = torch.zeros(n, h, w, dtype=torch.float64)
    for i in range(n):
        for box in torch.as_tensor(bboxes[i], dtype=torch.float32).reshape(
                -1, 4).tolist():
            x1 = math.floor(box[0] / shape[1] * w)
            x2 = math.ceil(box[2] / shape[1] * w)
            y1 = math.floor(box[1] / shape[0] * h)
            y2 = math.ceil(box[3] / shape[0] * h)
            value = 1.0 / ((y2 + 1 - y1) * (x2 + 1 - x1))
            for y in range(max(y1, 0), min(y2, h - 1) + 1):
                for x in range(max(x1, 0), min(x2, w - 1) + 1):
                    fg[i, y, x] = max(fg[i, y, x].item(), value)
        free = fg[i] == 0
        if free.any():
            bg[i][free] = 1.0 / free.sum().item()
    return fg, bg


def _attention(f, t):
    n, c, h, w = f.shape
    g_s = f.abs().sum(1) / c
    e_s = torch.exp(g_s / t)
    a_s = h * w * e_s / e_s.sum(dim=(1, 2), keepdim=True)
    g_c = f.abs().sum(dim=(2, 3)) / (h * w)
    e_c = torch.exp(g_c / t)
    a_c = c * e_c / e_c.sum(dim=1, keepdim=True)
    return a_s, a_c


def _gc_by_hand(block, f):
    p = {k: v.detach().double() for k, v in block.state_dict().items()}
    n, c, h, w = f.shape
    logits = torch.einsum('c,nchw->nhw', p['context_conv.weight'][0, :, 0, 0],
                          f) + p['context_conv.bias'][0]
    e = torch.exp(logits - logits.amax(dim=(1, 2), keepdim=True))
    wts = e / e.sum(dim=(1, 2), keepdim=True)
    ctx = torch.einsum('nchw,nhw->nc', f, wts)
    hid = ctx @ p['transform.0.weight'][:, :, 0, 0].T + p['transform.0.bias']
    mu = hid.mean(dim=1, keepdim=True)
    var = ((hid - mu)**2).mean(dim=1, keepdim=True)
    hid = (hid - mu) / torch.sqrt(var + 1e-5)
    hid = hid * p['transform.1.weight'][:, 0, 0] + p['transform.1.bias'][:, 0,
                                                                         0]
    hid = hid.clamp(min=0)
    out = hid @ p['transform.3.weight'][:, :, 0, 0].T + p['transform.3.bias']
    return f + out[:, :, None, None]


def _reference(loss, s, t, boxes, shape, alpha, beta, gamma, lambda_,
               loss_weight=1.0):
    s = s.detach().double()
    t = t.detach().double()
    if loss.align is not None:
        wgt = loss.align.weight.detach().double()[:, :, 0, 0]
        s = torch.einsum('oc,nchw->nohw', wgt, s) + \
            loss.align.bias.detach().double()[None, :, None, None]
    n, c, h, w = t.shape
    sa_t, ca_t = _attention(t, loss.tau)
    sa_s, ca_s = _attention(s, loss.tau)
    fg_m, bg_m = _ref_masks(boxes, shape, h, w)
    fg = bg = 0.0
    for k in range(c):
        d2 = (s[:, k] - t[:, k])**2 * sa_t * ca_t[:, k, None, None]
        fg = fg + (fg_m * d2).sum()
        bg = bg + (bg_m * d2).sum()
    fg, bg = fg / n, bg / n
    att = ((ca_s - ca_t).abs().sum() + (sa_s - sa_t).abs().sum()) / n
    glob = ((_gc_by_hand(loss.gc_student, s) -
             _gc_by_hand(loss.gc_teacher, t))**2).sum() / n
    total = loss_weight * (alpha * fg + beta * bg + gamma * att +
                           lambda_ * glob)
    return total, dict(fg=fg, bg=bg, attention=att, global_=glob)


def _randomise(module, seed=0):
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=gen, dtype=p.dtype) * 0.3)


def _rel(a, b):
    a, b = torch.as_tensor(a).detach(), torch.as_tensor(b).detach()
    return abs(float(a) - float(b)) / max(abs(float(b)), 1e-300)


BOXES = [[[8.0, 16.0, 60.0, 40.0], [50.0, 20.0, 90.0, 100.0],
          [100.0, 100.0, 128.0, 128.0]], []]


@pytest.mark.parametrize('student_channels', [None, 6])
def test_total_matches_reference(student_channels):
    torch.manual_seed(0)
    weights = dict(alpha=0.3, beta=0.2, gamma=0.05, lambda_=0.01)
    loss = FGDLoss(8, student_channels=student_channels, tau=0.7,
                   loss_weight=2.0, **weights).double()
    _randomise(loss)
    s = torch.randn(2, student_channels or 8, 16, 16, dtype=torch.float64)
    t = torch.randn(2, 8, 16, 16, dtype=torch.float64)
    out = loss(s, t, _samples(BOXES))
    assert out.dtype == torch.float64 and out.dim() == 0
    ref, comps = _reference(loss, s, t, BOXES, (128, 128), loss_weight=2.0,
                            **weights)
    assert _rel(out, ref) <= 1e-6
    for key, name in [('fg', 'fg'), ('bg', 'bg'), ('attention', 'attention'),
                      ('global', 'global_')]:
        assert comps[name] > 0
        assert _rel(loss.last_components[key], comps[name]) <= 1e-6


def test_default_weights_are_retinanet():
    loss = FGDLoss(8)
    assert (loss.alpha, loss.beta, loss.gamma, loss.lambda_) == (1e-3, 5e-4,
                                                                 5e-4, 5e-6)
    assert loss.tau == 0.5 and loss.loss_weight == 1.0
    assert loss.align is None
    loss = loss.double()
    _randomise(loss, seed=3)
    torch.manual_seed(1)
    s = torch.randn(2, 8, 8, 8, dtype=torch.float64) * 3
    t = torch.randn(2, 8, 8, 8, dtype=torch.float64) * 3
    ref, _ = _reference(loss, s, t, BOXES, (128, 128), **RETINA)
    assert _rel(loss(s, t, _samples(BOXES)), ref) <= 1e-6


def test_official_initialisation():
    loss = FGDLoss(16)
    for block in (loss.gc_student, loss.gc_teacher):
        assert torch.all(block.transform[-1].weight == 0)
        assert torch.all(block.transform[-1].bias == 0)
        assert torch.all(block.context_conv.bias == 0)
        # kaiming normal, fan_in = 16, relu gain: std = sqrt(2 / 16)
        assert block.context_conv.weight.std() > 0
    assert not torch.equal(loss.gc_student.context_conv.weight,
                           loss.gc_teacher.context_conv.weight)
    x = torch.randn(2, 16, 4, 4)
    torch.testing.assert_close(loss.gc_student(x), x)
    # init_weights (called by the runner) keeps the official scheme
    _randomise(loss)
    loss.init_weights()
    assert torch.all(loss.gc_teacher.transform[-1].weight == 0)


def test_zero_when_student_equals_teacher_at_init():
    loss = FGDLoss(8).double()
    t = torch.randn(2, 8, 8, 8, dtype=torch.float64)
    assert loss(t.clone(), t, _samples(BOXES)).item() == 0.0
    assert loss(t + 0.1, t, _samples(BOXES)).item() > 0.0


def test_gradients_reach_student_align_and_both_gc_blocks_not_teacher():
    torch.manual_seed(0)
    loss = FGDLoss(8, student_channels=4)
    _randomise(loss)
    s = torch.randn(2, 4, 16, 16, requires_grad=True)
    t = torch.randn(2, 8, 16, 16, requires_grad=True)
    loss(s, t, _samples(BOXES)).backward()
    assert t.grad is None
    assert s.grad is not None and s.grad.abs().sum() > 0
    assert loss.align.weight.grad.abs().sum() > 0
    for block in (loss.gc_student, loss.gc_teacher):
        for name, p in block.named_parameters():
            assert p.grad is not None, name
            if name == 'context_conv.bias':
                # a constant added before the softmax over positions changes
                # nothing: its true gradient is 0 (up to rounding)
                assert p.grad.abs().sum() < 1e-5, name
            else:
                assert p.grad.abs().sum() > 0, name


def test_teacher_graph_is_not_entered():
    # a teacher produced by a module with parameters: they get no gradient
    conv = torch.nn.Conv2d(3, 8, 1)
    t = conv(torch.randn(2, 3, 8, 8))
    s = torch.randn(2, 8, 8, 8, requires_grad=True)
    loss = FGDLoss(8)
    _randomise(loss)
    loss(s, t, _samples(BOXES)).backward()
    assert conv.weight.grad is None


def test_retinanet_fpn_levels_and_batch_one():
    torch.manual_seed(0)
    boxes = [[[10.0, 12.0, 70.0, 90.0]]]
    losses = [FGDLoss(256) for _ in range(5)]
    total = 0.0
    for stride, loss in zip((8, 16, 32, 64, 128), losses):
        size = 128 // stride
        s = torch.randn(1, 256, size, size, requires_grad=True)
        t = torch.randn(1, 256, size, size)
        value = loss(s, t, _samples(boxes))
        assert value.shape == () and torch.isfinite(value)
        assert value.item() > 0
        total = total + value
    total.backward()


def test_image_without_boxes_has_zero_foreground():
    loss = FGDLoss(4).double()
    s = torch.randn(2, 4, 8, 8, dtype=torch.float64)
    t = torch.randn(2, 4, 8, 8, dtype=torch.float64)
    out = loss(s, t, _samples([[], []]))
    assert torch.isfinite(out)
    assert loss.last_components['fg'].item() == 0.0
    assert loss.last_components['bg'].item() > 0.0
    ref, _ = _reference(loss, s, t, [[], []], (128, 128), **RETINA)
    assert _rel(out, ref) <= 1e-6


def test_non_square_input_and_float32():
    loss = FGDLoss(8)
    _randomise(loss)
    boxes = [[[4.0, 4.0, 40.0, 30.0]], [[60.0, 10.0, 96.0, 64.0]]]
    s = torch.randn(2, 8, 8, 12)
    t = torch.randn(2, 8, 8, 12)
    out = loss(s, t, _samples(boxes, (64, 96)))
    assert out.dtype == torch.float32
    ref, _ = _reference(loss, s, t, boxes, (64, 96), **RETINA)
    assert _rel(out, ref) <= 1e-5


def test_built_from_registry():
    loss = MODELS.build(
        dict(type='FGDLoss', in_channels=8, student_channels=4, alpha=5e-5,
             beta=2.5e-5, gamma=5e-5, lambda_=5e-7))
    assert isinstance(loss, FGDLoss) and loss.align is not None
    assert loss.alpha == 5e-5 and loss.lambda_ == 5e-7


def test_clear_errors():
    loss = FGDLoss(8)
    s = torch.randn(2, 8, 4, 4)
    t = torch.randn(2, 8, 4, 4)
    with pytest.raises(ValueError, match='data samples'):
        loss(s, t)
    with pytest.raises(ValueError, match='gt_instances'):
        loss(s, t, [DetDataSample(metainfo=dict(batch_input_shape=(32, 32)))]
             * 2)
    with pytest.raises(ValueError, match='batch_input_shape'):
        bad = _samples([[], []])
        for b in bad:
            b.set_metainfo(dict(img_shape=(32, 32)))
        no_shape = []
        for b in bad:
            d = DetDataSample()
            d.gt_instances = b.gt_instances
            no_shape.append(d)
        loss(s, t, no_shape)
    with pytest.raises(ValueError):
        loss(s, t, _samples([[]]))  # one sample for a batch of two
    with pytest.raises(ValueError):
        loss(torch.randn(2, 6, 4, 4), t, _samples([[], []]))
    with pytest.raises(ValueError):
        loss(s, torch.randn(2, 8, 5, 4), _samples([[], []]))


def test_fpn_levels_share_one_rasterisation_with_the_same_values():
    """The FGD losses of the five levels of a batch take their masks from
    one rasterisation of the batch's boxes (after a first batch has shown
    the level sizes of that input shape), with the values of the reference
    and of a fresh computation per level."""
    from mmdistill.losses import fgd as fgd_module
    cache = fgd_module._BOX_MASKS
    torch.manual_seed(0)
    losses = [FGDLoss(4).double() for _ in range(5)]
    for loss in losses:
        _randomise(loss)
    sizes = [(24, 40), (12, 20), (6, 10), (3, 5), (2, 3)]
    shape = (192, 320)
    boxes = [[[8.0, 16.0, 60.0, 40.0], [50.0, 20.0, 190.0, 100.0]],
             [[100.0, 100.0, 320.0, 192.0]], []]
    samples = _samples(boxes, shape)
    for loss, (h, w) in zip(losses, sizes):
        s = torch.randn(3, 4, h, w, dtype=torch.float64)
        t = torch.randn(3, 4, h, w, dtype=torch.float64)
        value = loss(s, t, samples)
        ref, _ = _reference(loss, s, t, boxes, shape, **RETINA)
        assert _rel(value, ref) <= 1e-6
        cache.clear()  # the same loss from masks computed afresh
        assert torch.equal(loss(s, t, samples), value)

    def run_levels():
        samples = _samples(boxes, shape)  # a new batch
        before = cache.rasterisations
        for loss, (h, w) in zip(losses, sizes):
            loss(torch.randn(3, 4, h, w, dtype=torch.float64),
                 torch.randn(3, 4, h, w, dtype=torch.float64), samples)
        return cache.rasterisations - before

    cache.clear()
    # the first batch of an input shape learns its level sizes one by one,
    # the next ones rasterise all five levels at once
    assert run_levels() == 5
    assert run_levels() == 1
    assert run_levels() == 1


def test_boxes_of_a_new_batch_are_never_stale():
    loss = FGDLoss(4).double()
    _randomise(loss)
    s = torch.randn(2, 4, 16, 16, dtype=torch.float64)
    t = torch.randn(2, 4, 16, 16, dtype=torch.float64)
    first = [[[8.0, 16.0, 60.0, 40.0]], []]
    second = [[[70.0, 70.0, 120.0, 110.0]], [[0.0, 0.0, 30.0, 30.0]]]
    loss(s, t, _samples(first))
    for boxes in (second, first):
        ref, _ = _reference(loss, s, t, boxes, (128, 128), **RETINA)
        assert _rel(loss(s, t, _samples(boxes)), ref) <= 1e-6
    # the same data samples with their boxes changed in place
    samples = _samples(first)
    loss(s, t, samples)
    samples[0].gt_instances.bboxes.add_(40.0)
    moved = [[[48.0, 56.0, 100.0, 80.0]], []]
    ref, _ = _reference(loss, s, t, moved, (128, 128), **RETINA)
    assert _rel(loss(s, t, samples), ref) <= 1e-6


def test_former_temperature_name_still_works():
    with pytest.warns(DeprecationWarning, match='tau'):
        loss = FGDLoss(8, temperature=0.7)
    assert loss.tau == 0.7
