"""Tests of DKDLoss (Zhao et al., CVPR 2022) against a float64 numpy
reference written from the paper's definitions (binary and non-target
distributions built from the full softmax), the decomposition
KD = TCKD + (1 - p_t^T) NCKD, targets and the warm-up."""
import itertools
import types
import warnings

import numpy as np
import pytest
import torch
from mmengine.logging import MessageHub

from mmdistill.losses import DKDLoss, KDLoss
from mmdistill.losses.dkd import dkd_targets
from mmdistill.registry import MODELS


def sample(label=None, score=None):
    """A stand-in for mmpretrain's DataSample (the loss reads gt_label and
    gt_score only)."""
    item = types.SimpleNamespace()
    if label is not None:
        item.gt_label = torch.tensor([label])
    if score is not None:
        item.gt_score = torch.as_tensor(score, dtype=torch.float32)
    return item


def np_softmax(z, tau):
    z = np.asarray(z, dtype=np.float64) / tau
    e = np.exp(z - z.max())
    return e / e.sum()


def np_kl(p, q):
    return float((p * (np.log(p) - np.log(q))).sum())


def dkd_reference(s, t, targets, tau, alpha, beta):
    """Per sample: p = softmax(z / tau); b = [p_t, sum of the others];
    p_hat = the others / their sum; tau^2 * mean of alpha KL(b) + beta
    KL(p_hat). Also returns the per-sample TCKD, NCKD and p_t^T."""
    tckd, nckd, pt_teacher = [], [], []
    for z_s, z_t, target in zip(s, t, targets):
        p_s, p_t = np_softmax(z_s, tau), np_softmax(z_t, tau)
        others = [i for i in range(len(p_s)) if i != target]
        b_s = np.array([p_s[target], p_s[others].sum()])
        b_t = np.array([p_t[target], p_t[others].sum()])
        tckd.append(np_kl(b_t, b_s))
        nckd.append(
            np_kl(p_t[others] / p_t[others].sum(),
                  p_s[others] / p_s[others].sum()))
        pt_teacher.append(p_t[target])
    tckd, nckd = np.array(tckd), np.array(nckd)
    loss = tau**2 * (alpha * tckd + beta * nckd).mean()
    return loss, tckd, nckd, np.array(pt_teacher)


_HUBS = itertools.count()


@pytest.fixture
def fresh_hub():
    """A MessageHub of its own as the current instance (no iteration
    recorded, whatever an earlier Runner left in its hub)."""
    return MessageHub.get_instance(f'test_dkd_{next(_HUBS)}')


def batch(n=6, c=10, seed=0):
    gen = torch.Generator().manual_seed(seed)
    s = 3 * torch.randn(n, c, dtype=torch.float64, generator=gen)
    t = 3 * torch.randn(n, c, dtype=torch.float64, generator=gen)
    targets = torch.randint(0, c, (n, ), generator=gen)
    return s, t, targets.tolist()


@pytest.mark.parametrize('tau,alpha,beta', [(1.0, 1.0, 0.5), (4.0, 1.0, 8.0),
                                            (2.0, 0.3, 2.0)])
def test_value_matches_numpy(tau, alpha, beta, fresh_hub):
    s, t, targets = batch()
    loss = DKDLoss(tau=tau, alpha=alpha, beta=beta, loss_weight=0.7)(
        s, t, [sample(k) for k in targets])
    assert loss.dtype == torch.float64 and loss.dim() == 0
    ref = dkd_reference(s.numpy(), t.numpy(), targets, tau, alpha, beta)[0]
    assert loss.item() == pytest.approx(0.7 * ref, rel=1e-10)


def test_tckd_and_nckd_split_and_kd_decomposition(fresh_hub):
    s, t, targets = batch(n=5, c=7, seed=1)
    samples = [sample(k) for k in targets]
    tau = 2.0
    _, tckd_ref, nckd_ref, pt = dkd_reference(s.numpy(), t.numpy(), targets,
                                              tau, 1.0, 1.0)
    # the loss with alpha=1, beta=0 is TCKD, with alpha=0, beta=1 NCKD
    tckd = DKDLoss(tau=tau, alpha=1.0, beta=0.0)(s, t, samples).item()
    nckd = DKDLoss(tau=tau, alpha=0.0, beta=1.0)(s, t, samples).item()
    assert tckd == pytest.approx(tau**2 * tckd_ref.mean(), rel=1e-10)
    assert nckd == pytest.approx(tau**2 * nckd_ref.mean(), rel=1e-10)
    # Section 3.1: KD = TCKD + (1 - p_t^T) NCKD, sample by sample
    for i in range(len(targets)):
        kd = KDLoss(tau=tau)(s[i:i + 1], t[i:i + 1]).item()
        per = DKDLoss(tau=tau, alpha=1.0, beta=1.0 - pt[i])(
            s[i:i + 1], t[i:i + 1], samples[i:i + 1]).item()
        assert per == pytest.approx(kd, rel=1e-10)


def test_terms_respond_to_their_own_part_only(fresh_hub):
    s, t, targets = batch(n=4, c=6, seed=2)
    samples = [sample(k) for k in targets]
    tckd = DKDLoss(alpha=1.0, beta=0.0)
    nckd = DKDLoss(alpha=0.0, beta=1.0)
    # equal logits: both terms 0
    assert abs(tckd(t.clone(), t, samples).item()) < 1e-14
    assert abs(nckd(t.clone(), t, samples).item()) < 1e-14
    # raising only the target logits changes p_t but not the distribution
    # among the other classes: NCKD unchanged, TCKD not
    rows = torch.arange(4)
    raised = s.clone()
    raised[rows, targets] += 2.0
    assert nckd(raised, t, samples).item() == pytest.approx(
        nckd(s, t, samples).item(), rel=1e-12)
    assert abs(tckd(raised, t, samples).item() -
               tckd(s, t, samples).item()) > 1e-3
    # a student with the teacher's p_t but the other classes permuted:
    # TCKD 0, NCKD > 0
    student = t.clone()
    for i, k in enumerate(targets):
        others = [j for j in range(6) if j != k]
        student[i, others] = t[i, others[1:] + others[:1]]
    assert abs(tckd(student, t, samples).item()) < 1e-14
    assert nckd(student, t, samples).item() > 1e-3


def test_gradient_to_student_only_and_confident_teacher_finite(fresh_hub):
    s = torch.randn(3, 1000, requires_grad=True)
    t = torch.zeros(3, 1000)
    targets = [5, 17, 999]
    t[torch.arange(3), targets] = 200.0  # p_t^T = 1 in float32
    t.requires_grad_(True)
    loss = DKDLoss(beta=8.0)(s, t, [sample(k) for k in targets])
    loss.backward()
    assert torch.isfinite(loss) and loss > 0
    assert torch.isfinite(s.grad).all() and s.grad.abs().sum() > 0
    assert t.grad is None
    # the float64 value of the same batch
    ref = DKDLoss(beta=8.0)(s.detach().double(), t.detach().double(),
                            [sample(k) for k in targets])
    assert loss.item() == pytest.approx(ref.item(), rel=1e-5)


def test_half_precision_gives_float32(fresh_hub):
    s, t, targets = batch(n=3, c=9, seed=3)
    loss = DKDLoss(tau=4.0)(s.half(), t.half(), [sample(k) for k in targets])
    assert loss.dtype == torch.float32
    ref = dkd_reference(s.half().double().numpy(), t.half().double().numpy(),
                        targets, 4.0, 1.0, 8.0)[0]
    assert loss.item() == pytest.approx(ref, rel=1e-4)


def test_targets_from_gt_label_and_gt_score():
    # hard labels
    got = dkd_targets([sample(3), sample(0)], 2, 5, 'cpu')
    assert got.tolist() == [3, 0] and got.dtype == torch.long
    # Mixup / CutMix: the score's argmax wins over the original label; a
    # tie goes to the lower class index
    mixed = [
        sample(1, score=[0.0, 0.3, 0.0, 0.7, 0.0]),
        sample(4, score=[0.0, 0.5, 0.0, 0.0, 0.5]),
        sample(score=[0.9, 0.1, 0.0, 0.0, 0.0]),
    ]
    assert dkd_targets(mixed, 3, 5, 'cpu').tolist() == [3, 1, 0]


def test_mixup_batch_uses_score_argmax(fresh_hub):
    s, t, _ = batch(n=2, c=5, seed=4)
    mixed = [sample(1, score=[0.0, 0.3, 0.0, 0.7, 0.0]),
             sample(2, score=[0.6, 0.0, 0.4, 0.0, 0.0])]
    loss = DKDLoss(beta=2.0)(s, t, mixed).item()
    ref = dkd_reference(s.numpy(), t.numpy(), [3, 0], 1.0, 1.0, 2.0)[0]
    assert loss == pytest.approx(ref, rel=1e-10)


def test_real_mmpretrain_data_samples(fresh_hub):
    structures = pytest.importorskip('mmpretrain.structures')
    samples = [structures.DataSample().set_gt_label(k) for k in (2, 0)]
    samples.append(structures.DataSample().set_gt_label(1).set_gt_score(
        torch.tensor([0.2, 0.1, 0.7])))
    s = torch.randn(3, 3, dtype=torch.float64)
    t = torch.randn(3, 3, dtype=torch.float64)
    loss = DKDLoss(beta=1.0)(s, t, samples).item()
    ref = dkd_reference(s.numpy(), t.numpy(), [2, 0, 2], 1.0, 1.0, 1.0)[0]
    assert loss == pytest.approx(ref, rel=1e-10)


def test_bad_targets_and_shapes_raise(fresh_hub):
    s, t = torch.randn(2, 4), torch.randn(2, 4)
    dkd = DKDLoss()
    with pytest.raises(ValueError, match='data_samples'):
        dkd(s, t)
    with pytest.raises(ValueError, match='neither gt_label nor gt_score'):
        dkd(s, t, [sample(1), sample()])
    multi = sample()
    multi.gt_label = torch.tensor([0, 2])
    with pytest.raises(ValueError, match='one target class.*2 labels'):
        dkd(s, t, [sample(1), multi])
    with pytest.raises(ValueError, match='outside the 4 classes'):
        dkd(s, t, [sample(1), sample(7)])
    with pytest.raises(ValueError, match='3 data samples for 2'):
        dkd(s, t, [sample(1)] * 3)
    with pytest.raises(ValueError, match='gt_score of 3 classes'):
        dkd(s, t, [sample(1), sample(score=[0.1, 0.2, 0.7])])
    with pytest.raises(ValueError, match=r'\(N, C\) with C >= 2'):
        dkd(torch.randn(2, 1), torch.randn(2, 1), [sample(0)] * 2)
    for kwargs in (dict(tau=0), dict(beta=-1), dict(warmup_iters=1.5),
                   dict(warmup_iters=-1)):
        with pytest.raises(ValueError):
            DKDLoss(**kwargs)


def test_warmup_follows_the_runner_iteration(fresh_hub):
    s, t, targets = batch(n=3, c=6, seed=5)
    samples = [sample(k) for k in targets]
    full = DKDLoss()(s, t, samples).item()
    dkd = DKDLoss(warmup_iters=4)
    # the official min(epoch / W, 1) with epochs from 1: iteration i
    # (0-based, as mmengine records it) gets min((i + 1) / W, 1)
    for iteration, factor in [(0, 0.25), (1, 0.5), (2, 0.75), (3, 1.0),
                              (100, 1.0)]:
        fresh_hub.update_info('iter', iteration)
        assert dkd.warmup_factor() == factor
        assert dkd(s, t, samples).item() == pytest.approx(factor * full,
                                                          rel=1e-12)


def test_warmup_outside_a_runner_warns_once_and_is_off(fresh_hub):
    s, t, targets = batch(n=2, c=4, seed=6)
    samples = [sample(k) for k in targets]
    dkd = DKDLoss(warmup_iters=10)
    with pytest.warns(UserWarning, match='no training iteration'):
        value = dkd(s, t, samples).item()
    assert value == pytest.approx(DKDLoss()(s, t, samples).item())
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        dkd(s, t, samples)
    # no warm-up: the hub is never read
    assert DKDLoss(warmup_iters=0).warmup_factor() == 1.0


def test_registry_build():
    loss = MODELS.build(dict(type='DKDLoss', tau=1, alpha=1, beta=0.5,
                             warmup_iters=5))
    assert isinstance(loss, DKDLoss)
    assert (loss.tau, loss.alpha, loss.beta, loss.warmup_iters) == \
        (1, 1, 0.5, 5)
