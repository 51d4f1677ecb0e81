"""Tests of PixelKLDivergence (pixel-wise KD on segmentation logits)."""
import math

import pytest
import torch
from mmengine.structures import PixelData
from mmseg.structures import SegDataSample

from mmdistill.losses import PixelKLDivergence
from mmdistill.registry import MODELS


def make_samples(labels):
    """SegDataSamples whose gt_sem_seg holds ``labels[i]`` as (1, H, W)."""
    samples = []
    for label in labels:
        sample = SegDataSample()
        sample.gt_sem_seg = PixelData(data=label[None].long())
        samples.append(sample)
    return samples


def _softmax(values, tau):
    top = max(values)
    exps = [math.exp((v - top) / tau) for v in values]
    total = sum(exps)
    return [e / total for e in exps]


def pixel_kl_reference(s, t, valid, tau, weight):
    """Loop over pixels: class softmax, KL(teacher || student), valid mean."""
    n, k, h, w = s.shape
    total, count = 0.0, 0
    for i in range(n):
        for y in range(h):
            for x in range(w):
                if not valid[i][y][x]:
                    continue
                p_s = _softmax([s[i, j, y, x].item() for j in range(k)], tau)
                p_t = _softmax([t[i, j, y, x].item() for j in range(k)], tau)
                total += sum(pt * (math.log(pt) - math.log(ps))
                             for pt, ps in zip(p_t, p_s))
                count += 1
    return weight * tau**2 * total / count


@pytest.mark.parametrize('tau', [1.0, 3.0])
def test_value_matches_loop_with_ignored_pixels(tau):
    torch.manual_seed(0)
    s = torch.randn(2, 4, 3, 5, dtype=torch.float64)
    t = 2 * torch.randn(2, 4, 3, 5, dtype=torch.float64)
    # Labels at twice the logits' size; nearest resize keeps the even rows
    # and columns, written here as plain slicing.
    labels = torch.randint(0, 4, (2, 6, 10))
    labels[torch.rand(2, 6, 10) < 0.3] = 255
    labels[0, 0, 0] = 255  # make sure at least one kept pixel is ignored
    small = labels[:, ::2, ::2]
    valid = [[[small[i, y, x].item() != 255 for x in range(5)]
              for y in range(3)] for i in range(2)]
    loss = PixelKLDivergence(tau=tau, loss_weight=10.0)(
        s, t, make_samples(labels))
    assert loss.dtype == torch.float64 and loss.dim() == 0
    ref = pixel_kl_reference(s, t, valid, tau, 10.0)
    assert abs(loss.item() - ref) <= 1e-6 * abs(ref)
    all_valid = pixel_kl_reference(s, t, [[[True] * 5] * 3] * 2, tau, 10.0)
    assert abs(loss.item() - all_valid) > 1e-6  # the mask matters


def test_no_data_samples_means_all_pixels():
    torch.manual_seed(1)
    s = torch.randn(2, 3, 4, 4, dtype=torch.float64)
    t = torch.randn(2, 3, 4, 4, dtype=torch.float64)
    valid = [[[True] * 4] * 4] * 2
    ref = pixel_kl_reference(s, t, valid, 1.0, 1.0)
    assert PixelKLDivergence()(s, t).item() == pytest.approx(ref, rel=1e-6)
    no_ignore = make_samples(torch.zeros(2, 4, 4, dtype=torch.long))
    assert PixelKLDivergence()(s, t, no_ignore).item() == pytest.approx(
        ref, rel=1e-6)
    # ignore_index=None counts every pixel even when labels hold 255.
    all_255 = make_samples(torch.full((2, 4, 4), 255))
    assert PixelKLDivergence(ignore_index=None)(
        s, t, all_255).item() == pytest.approx(ref, rel=1e-6)


def test_custom_ignore_index():
    torch.manual_seed(2)
    s = torch.randn(1, 3, 2, 2, dtype=torch.float64)
    t = torch.randn(1, 3, 2, 2, dtype=torch.float64)
    labels = torch.tensor([[[0, -1], [-1, 255]]])
    valid = [[[True, False], [False, True]]]
    loss = PixelKLDivergence(ignore_index=-1)(s, t, make_samples(labels))
    ref = pixel_kl_reference(s, t, valid, 1.0, 1.0)
    assert loss.item() == pytest.approx(ref, rel=1e-6)


def test_zero_when_equal_positive_otherwise():
    torch.manual_seed(3)
    t = torch.randn(2, 5, 4, 4, dtype=torch.float64)
    kd = PixelKLDivergence(tau=2.0)
    assert abs(kd(t.clone(), t).item()) < 1e-14
    # Adding the same constant to every class leaves each softmax unchanged.
    assert abs(kd(t + torch.randn(2, 1, 4, 4, dtype=torch.float64),
                  t).item()) < 1e-12
    assert kd(t + 0.1 * torch.randn_like(t), t).item() > 0


def test_all_ignore_is_zero_and_differentiable():
    s = torch.randn(2, 3, 4, 4, requires_grad=True)
    t = torch.randn(2, 3, 4, 4, requires_grad=True)
    samples = make_samples(torch.full((2, 8, 8), 255))
    loss = PixelKLDivergence(loss_weight=10.0)(s, t, samples)
    assert loss.item() == 0.0 and not torch.isnan(loss)
    loss.backward()
    assert t.grad is None
    assert torch.equal(s.grad, torch.zeros_like(s))


def test_gradient_to_student_not_teacher():
    s = torch.randn(2, 3, 4, 4, dtype=torch.float64, requires_grad=True)
    t = torch.randn(2, 3, 4, 4, dtype=torch.float64, requires_grad=True)
    labels = torch.randint(0, 3, (2, 4, 4))
    labels[:, 0] = 255
    PixelKLDivergence()(s, t, make_samples(labels)).backward()
    assert t.grad is None
    # Ignored pixels get no gradient, the others do.
    assert torch.equal(s.grad[:, :, 0], torch.zeros_like(s.grad[:, :, 0]))
    assert s.grad[:, :, 1:].abs().sum() > 0


def test_pspnet_logits_at_one_eighth_batch_one():
    torch.manual_seed(4)
    # 19-class PSPNet logits at 1/8 of a 64 x 64 crop, labels at full size.
    s = torch.randn(1, 19, 8, 8, dtype=torch.float64, requires_grad=True)
    t = torch.randn(1, 19, 8, 8, dtype=torch.float64)
    labels = torch.randint(0, 19, (1, 64, 64))
    labels[:, :32] = 255
    loss = PixelKLDivergence(tau=1.0, loss_weight=10.0)(
        s, t, make_samples(labels))
    loss.backward()
    small = labels[:, ::8, ::8]
    valid = (small != 255).tolist()
    ref = pixel_kl_reference(s.detach(), t, valid, 1.0, 10.0)
    assert loss.item() == pytest.approx(ref, rel=1e-6)
    assert torch.isfinite(s.grad).all()


def test_half_precision_gives_float32():
    s = torch.randn(2, 3, 4, 4).half()
    t = torch.randn(2, 3, 4, 4).half()
    samples = make_samples(torch.randint(0, 3, (2, 4, 4)))
    loss = PixelKLDivergence(tau=2.0)(s, t, samples)
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    valid = [[[True] * 4] * 4] * 2
    ref = pixel_kl_reference(s.double(), t.double(), valid, 2.0, 1.0)
    assert loss.item() == pytest.approx(ref, rel=1e-4)


def test_shape_and_batch_mismatch_raise():
    with pytest.raises(ValueError, match=r'\(2, 3, 4, 4\).*\(2, 5, 4, 4\)'):
        PixelKLDivergence()(torch.randn(2, 3, 4, 4), torch.randn(2, 5, 4, 4))
    samples = make_samples(torch.zeros(1, 4, 4, dtype=torch.long))
    with pytest.raises(ValueError, match='1 data samples'):
        PixelKLDivergence()(torch.randn(2, 3, 4, 4), torch.randn(2, 3, 4, 4),
                            samples)


def test_registry_build():
    loss = MODELS.build(dict(type='PixelKLDivergence', tau=1.0,
                             loss_weight=10, ignore_index=255))
    assert isinstance(loss, PixelKLDivergence) and loss.ignore_index == 255
