"""Tests of DISTLoss (Huang et al., NeurIPS 2022): the inter- and
intra-class relation losses against numpy's Pearson correlation
(``np.corrcoef``) and the whole loss against a float64 numpy reference with
the official eps."""
import numpy as np
import pytest
import torch

from mmdistill.losses import DISTLoss
from mmdistill.registry import MODELS


def np_softmax(z, tau):
    z = np.asarray(z, dtype=np.float64) / tau
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def corr(u, v):
    return np.corrcoef(u, v)[0, 1]


def relations_corrcoef(s, t, tau):
    """1 - mean Pearson over classes per sample (inter) and over the batch
    per class (intra), by np.corrcoef (no eps)."""
    y_s, y_t = np_softmax(s, tau), np_softmax(t, tau)
    inter = 1 - np.mean([corr(y_s[i], y_t[i]) for i in range(len(y_s))])
    intra = 1 - np.mean(
        [corr(y_s[:, j], y_t[:, j]) for j in range(y_s.shape[1])])
    return inter, intra


def dist_reference(s, t, tau, beta, gamma, weight, eps=1e-8):
    """The loss with the official eps added to the product of the centred
    norms, by loops."""
    y_s, y_t = np_softmax(s, tau), np_softmax(t, tau)

    def rho(u, v):
        u, v = u - u.mean(), v - v.mean()
        return (u * v).sum() / (np.sqrt((u * u).sum()) *
                                np.sqrt((v * v).sum()) + eps)

    inter = 1 - np.mean([rho(y_s[i], y_t[i]) for i in range(len(y_s))])
    intra = 1 - np.mean(
        [rho(y_s[:, j], y_t[:, j]) for j in range(y_s.shape[1])])
    return weight * tau**2 * (beta * inter + gamma * intra)


def batch(n=8, c=6, seed=0, scale=2.0):
    gen = torch.Generator().manual_seed(seed)
    s = scale * torch.randn(n, c, dtype=torch.float64, generator=gen)
    t = scale * torch.randn(n, c, dtype=torch.float64, generator=gen)
    return s, t


@pytest.mark.parametrize('tau', [1.0, 4.0])
def test_relations_match_numpy_pearson(tau):
    s, t = batch()
    inter, intra = DISTLoss(tau=tau).relations(s, t)
    ref_inter, ref_intra = relations_corrcoef(s.numpy(), t.numpy(), tau)
    # the official eps (1e-8 on the product of norms of order 0.1) moves
    # the correlations by ~1e-6 at most
    assert inter.item() == pytest.approx(ref_inter, rel=1e-5)
    assert intra.item() == pytest.approx(ref_intra, rel=1e-5)
    loss = DISTLoss(tau=tau, beta=1.5, gamma=0.5, loss_weight=2.0)(s, t)
    assert loss.item() == pytest.approx(
        2.0 * tau**2 * (1.5 * ref_inter + 0.5 * ref_intra), rel=1e-5)


@pytest.mark.parametrize('tau,beta,gamma', [(1.0, 1.0, 1.0),
                                            (4.0, 2.0, 2.0),
                                            (2.0, 0.0, 1.0)])
def test_value_matches_numpy_with_eps(tau, beta, gamma):
    s, t = batch(n=5, c=11, seed=1)
    loss = DISTLoss(tau=tau, beta=beta, gamma=gamma, loss_weight=2.0)(s, t)
    assert loss.dtype == torch.float64 and loss.dim() == 0
    ref = dist_reference(s.numpy(), t.numpy(), tau, beta, gamma, 2.0)
    assert loss.item() == pytest.approx(ref, rel=1e-12)


def test_zero_for_equal_logits_and_bounded():
    s, t = batch(seed=2)
    dist = DISTLoss()
    assert abs(dist(t.clone(), t).item()) < 1e-6
    value = dist(s, t).item()
    assert 0 < value <= 4
    # opposite relations approach the maximum of each term (2): a student
    # whose logits are the negated teacher's anti-correlates on 2 classes
    two = torch.tensor([[3.0, -3.0], [-1.0, 1.0], [2.0, 0.5]],
                       dtype=torch.float64)
    inter, intra = dist.relations(-two, two)
    assert inter.item() == pytest.approx(2.0, abs=1e-6)
    assert intra.item() == pytest.approx(2.0, abs=1e-6)


def test_relations_not_values():
    # inter-class: per sample, a positive affine map of the teacher's
    # probabilities has correlation 1, though KD would see a divergence
    t = torch.tensor([[2.0, 0.0, -1.0, 0.5]], dtype=torch.float64)
    y_t = torch.softmax(t, dim=1)
    y_s = 0.5 * y_t + 0.5 / 4  # still a distribution
    inter, _ = DISTLoss().relations(y_s.log(), t)
    assert abs(inter.item()) < 1e-7
    # intra-class: the batch order does not matter, only the pairing
    s, t = batch(seed=3)
    perm = torch.randperm(8, generator=torch.Generator().manual_seed(0))
    dist = DISTLoss()
    assert dist(s[perm], t[perm]).item() == pytest.approx(
        dist(s, t).item(), rel=1e-12)
    # inter-class: a class permutation applied to both changes nothing
    cls = torch.randperm(6, generator=torch.Generator().manual_seed(1))
    assert dist(s[:, cls], t[:, cls]).item() == pytest.approx(
        dist(s, t).item(), rel=1e-12)


def test_batch_of_one_has_a_constant_intra_term_and_finite_gradient():
    s = torch.randn(1, 10, dtype=torch.float64, requires_grad=True)
    t = torch.randn(1, 10, dtype=torch.float64)
    inter, intra = DISTLoss().relations(s, t)
    assert intra.item() == 1.0
    loss = DISTLoss(beta=0.0, gamma=1.0)(s, t)
    loss.backward()
    assert loss.item() == 1.0 and torch.isfinite(s.grad).all()
    assert s.grad.abs().max() == 0


def test_gradient_to_student_only_imagenet_shape_and_half():
    torch.manual_seed(4)
    s = torch.randn(16, 1000, requires_grad=True)
    t = torch.randn(16, 1000, requires_grad=True)
    loss = DISTLoss()(s, t)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(s.grad).all()
    assert s.grad.abs().sum() > 0 and t.grad is None
    ref = dist_reference(s.detach().double().numpy(),
                         t.detach().double().numpy(), 1.0, 1.0, 1.0, 1.0)
    assert loss.item() == pytest.approx(ref, rel=1e-4)
    half = DISTLoss(tau=4.0)(s.detach().half(), t.detach().half())
    assert half.dtype == torch.float32
    ref = dist_reference(s.detach().half().double().numpy(),
                         t.detach().half().double().numpy(), 4.0, 1.0, 1.0,
                         1.0)
    assert half.item() == pytest.approx(ref, rel=1e-3)


def test_wrong_shapes_raise_and_registry_build():
    with pytest.raises(ValueError, match=r'\(4, 10\).*\(4, 5\)'):
        DISTLoss()(torch.randn(4, 10), torch.randn(4, 5))
    with pytest.raises(ValueError, match=r'\(N, C\)'):
        DISTLoss()(torch.randn(4, 10, 2), torch.randn(4, 10, 2))
    with pytest.raises(ValueError, match='tau > 0'):
        DISTLoss(tau=-1)
    loss = MODELS.build(dict(type='DISTLoss', tau=1, beta=1, gamma=1,
                             loss_weight=2))
    assert isinstance(loss, DISTLoss) and loss.loss_weight == 2
