"""Tests of TaTConnector (the target-aware transformer, TaT)."""
import contextlib
import math
import warnings

import pytest
import torch
import torch.nn.functional as F

from mmdistill.analysis.memory import cpu_peak_allocated
from mmdistill.connectors import TaTConnector
from mmdistill.connectors import tat as tat_module
from mmdistill.registry import MODELS


def rel_err(a, b):
    return ((a - b).norm() / b.norm()).item()


def grad_err(g, g_ref, all_ref):
    """Relative error of a gradient, against the largest of ``all_ref``
    where it is 0 up to rounding (key.bn.bias: softmax-invariant)."""
    scale = max(max(x.norm() for x in all_ref) * 1e-3, g_ref.norm())
    return ((g - g_ref).norm() / scale).item()


def make(in_c, out_c, **kwargs):
    """A float64 connector with non-trivial BN affine parameters."""
    conn = TaTConnector(in_c, out_c, **kwargs).double()
    with torch.no_grad():
        for module in conn.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.weight.uniform_(0.5, 1.5)
                module.bias.uniform_(-0.5, 0.5)
    return conn


def embed_ref(conv_module, x):
    """1x1 conv (no bias) then BatchNorm with the batch statistics."""
    weight = conv_module.conv.weight.detach()[:, :, 0, 0]
    y = torch.einsum('oc,nchw->nohw', weight, x)
    mean = y.mean(dim=(0, 2, 3), keepdim=True)
    var = ((y - mean) ** 2).mean(dim=(0, 2, 3), keepdim=True)
    bn = conv_module.norm
    y = (y - mean) / torch.sqrt(var + bn.eps)
    return y * bn.weight.detach()[None, :, None, None] + \
        bn.bias.detach()[None, :, None, None]


def qkv_ref(conn, student, teacher):
    q = embed_ref(conn.query, student)
    v = embed_ref(conn.value, student)
    k = embed_ref(conn.key, teacher) if conn.key is not None and \
        not isinstance(conn.key, torch.nn.Identity) else teacher
    return q, k, v


def attend_ref(q, k, v):
    """Row softmax of ``q k^T`` (no scaling) applied to ``v``; (L, D) each."""
    logits = q @ k.T
    weights = torch.exp(logits - logits.max(dim=1, keepdim=True).values)
    weights = weights / weights.sum(dim=1, keepdim=True)
    return weights @ v, weights


def global_ref(q, k, v, heads):
    n, c, h, w = v.shape
    d = c // heads
    out = torch.zeros_like(v)
    attn = torch.zeros(n, heads, h * w, h * w, dtype=v.dtype)
    for b in range(n):
        for head in range(heads):
            sl = slice(head * d, (head + 1) * d)
            o, a = attend_ref(q[b, sl].reshape(d, -1).T,
                              k[b, sl].reshape(d, -1).T,
                              v[b, sl].reshape(d, -1).T)
            out[b, sl] = o.T.reshape(d, h, w)
            attn[b, head] = a
    return out, attn


def starts(size, num):
    length = math.ceil(size / num)
    if num == 1:
        return length, [0]
    return length, [math.floor(i * (size - length) / (num - 1))
                    for i in range(num)]


def patch_group_ref(q, k, v, grid, groups):
    """Loop over images, groups and patches; overlapped pixels averaged."""
    n, c, h, w = v.shape
    ph, row0 = starts(h, grid[0])
    pw, col0 = starts(w, grid[1])
    patches = [(r, s) for r in row0 for s in col0]  # row-major order
    per = len(patches) // groups
    out = torch.zeros_like(v)
    count = torch.zeros(h, w, dtype=v.dtype)
    attn = torch.zeros(n, groups, ph * pw, ph * pw, dtype=v.dtype)

    def stack(x, b, members):
        return torch.cat([x[b, :, r:r + ph, s:s + pw].reshape(c, -1)
                          for r, s in members]).T

    for b in range(n):
        for g in range(groups):
            members = patches[g * per:(g + 1) * per]
            o, a = attend_ref(stack(q, b, members), stack(k, b, members),
                              stack(v, b, members))
            attn[b, g] = a
            for t, (r, s) in enumerate(members):
                out[b, :, r:r + ph, s:s + pw] += \
                    o[:, t * c:(t + 1) * c].T.reshape(c, ph, pw)
                if b == 0:
                    count[r:r + ph, s:s + pw] += 1
    assert (count > 0).all()  # every position is covered
    return out / count, attn


def cells(size, num):
    return [(a * size // num, -(-(a + 1) * size // num)) for a in range(num)]


def pool_ref(x, grid):
    n, c, h, w = x.shape
    out = torch.zeros(n, c, *grid, dtype=x.dtype)
    for a, (r0, r1) in enumerate(cells(h, grid[0])):
        for b, (s0, s1) in enumerate(cells(w, grid[1])):
            out[:, :, a, b] = x[:, :, r0:r1, s0:s1].mean(dim=(2, 3))
    return out


def unpool_ref(x, size):
    """Each position takes the mean of the anchor cells that contain it."""
    n, c, gh, gw = x.shape
    out = torch.zeros(n, c, *size, dtype=x.dtype)
    hits = torch.zeros(*size, dtype=x.dtype)
    for a, (r0, r1) in enumerate(cells(size[0], gh)):
        for b, (s0, s1) in enumerate(cells(size[1], gw)):
            out[:, :, r0:r1, s0:s1] += x[:, :, a:a + 1, b:b + 1]
    for i in range(size[0]):
        for j in range(size[1]):
            hits[i, j] = sum(r0 <= i < r1 for r0, r1 in cells(size[0], gh)) \
                * sum(s0 <= j < s1 for s0, s1 in cells(size[1], gw))
    return out / hits


def inputs(n, in_c, out_c, size, seed=0):
    gen = torch.Generator().manual_seed(seed)
    student = torch.randn(n, in_c, *size, generator=gen, dtype=torch.float64)
    teacher = torch.randn(n, out_c, *size, generator=gen,
                          dtype=torch.float64)
    return student, teacher


# --------------------------------------------------------------- global ---
@pytest.mark.parametrize('n,in_c,out_c,size,heads', [
    (2, 6, 10, (4, 5), 1),    # channel mismatch
    (1, 8, 8, (3, 3), 1),     # batch 1
    (2, 6, 12, (3, 4), 3),    # multi-head
])
def test_global_value(n, in_c, out_c, size, heads):
    torch.manual_seed(0)
    conn = make(in_c, out_c, mode='global', num_heads=heads)
    student, teacher = inputs(n, in_c, out_c, size)
    out = conn(student, teacher)
    expected, attn = global_ref(*qkv_ref(conn, student, teacher), heads)
    assert out.dtype == torch.float64 and out.shape == teacher.shape
    assert rel_err(out, expected) <= 1e-6
    assert rel_err(conn.last_attention, attn) <= 1e-6


def test_global_attention_rows_sum_to_one_and_are_detached():
    torch.manual_seed(0)
    conn = make(4, 6, mode='global')
    student, teacher = inputs(2, 4, 6, (5, 3))
    student.requires_grad_(True)
    conn(student, teacher)
    attn = conn.last_attention
    assert attn.shape == (2, 1, 15, 15)
    assert not attn.requires_grad
    assert (attn >= 0).all()
    assert torch.allclose(attn.sum(-1), torch.ones(2, 1, 15,
                                                   dtype=attn.dtype))
    # not the uniform map: it really depends on q and k
    assert attn.std() > 1e-3


def test_no_sqrt_d_scaling():
    """Doubling q (via theta's BN) must square the softmax logits' base."""
    torch.manual_seed(0)
    conn = make(4, 4, mode='global')
    student, teacher = inputs(1, 4, 4, (2, 3))
    conn(student, teacher)
    first = conn.last_attention.clone()
    with torch.no_grad():
        conn.query.norm.weight.mul_(2)
        conn.query.norm.bias.mul_(2)
    conn(student, teacher)
    second = conn.last_attention
    # softmax(2 z) = softmax(z)^2 / sum(softmax(z)^2)
    expected = first ** 2 / (first ** 2).sum(-1, keepdim=True)
    assert rel_err(second, expected) <= 1e-6


def test_identity_key():
    torch.manual_seed(0)
    conn = make(5, 6, mode='global', key_embed=False)
    assert isinstance(conn.key, torch.nn.Identity)
    student, teacher = inputs(2, 5, 6, (3, 3))
    out = conn(student, teacher)
    q = embed_ref(conn.query, student)
    v = embed_ref(conn.value, student)
    expected, _ = global_ref(q, teacher, v, 1)
    assert rel_err(out, expected) <= 1e-6


# ---------------------------------------------------------- patch group ---
@pytest.mark.parametrize('size,grid,groups', [
    ((8, 8), (2, 4), 4),      # 8 patches of 4x2, 2 patches per group
    ((8, 6), (4, 3), None),   # one group per patch
    ((6, 6), (3, 3), 1),      # all 9 patches stacked in one group
])
def test_patch_group_divisible_value(size, grid, groups):
    torch.manual_seed(0)
    conn = make(6, 10, mode='patch_group', patch_grid=grid,
                num_groups=groups)
    student, teacher = inputs(2, 6, 10, size)
    with warnings.catch_warnings():
        warnings.simplefilter('error')  # divisible: no warning
        out = conn(student, teacher)
    n_groups = groups or grid[0] * grid[1]
    expected, attn = patch_group_ref(*qkv_ref(conn, student, teacher), grid,
                                     n_groups)
    assert out.shape == teacher.shape
    assert rel_err(out, expected) <= 1e-6
    assert rel_err(conn.last_attention, attn) <= 1e-6
    assert torch.allclose(conn.last_attention.sum(-1),
                          torch.ones(attn.shape[:-1], dtype=attn.dtype))


def test_patch_group_one_patch_per_group_is_local_global_attention():
    """With one group per patch each patch is an independent global TaT."""
    torch.manual_seed(0)
    conn = make(4, 6, mode='patch_group', patch_grid=(2, 2), num_groups=None)
    student, teacher = inputs(1, 4, 6, (4, 6))
    out = conn(student, teacher)
    q, k, v = qkv_ref(conn, student, teacher)
    for r in (0, 2):
        for s in (0, 3):
            sl = (slice(None), slice(None), slice(r, r + 2), slice(s, s + 3))
            local, _ = global_ref(q[sl], k[sl], v[sl], 1)
            assert rel_err(out[sl], local) <= 1e-6


@pytest.mark.parametrize('size,grid,groups', [
    ((7, 10), (3, 4), 2),     # remainder rows and columns
    ((5, 9), (2, 2), 4),      # remainder, one group per patch
    ((3, 5), (4, 4), 8),      # map smaller than the grid
])
def test_patch_group_non_divisible_value_and_warning(size, grid, groups):
    torch.manual_seed(0)
    conn = make(6, 8, mode='patch_group', patch_grid=grid, num_groups=groups)
    student, teacher = inputs(2, 6, 8, size)
    with pytest.warns(UserWarning, match='overlap'):
        out = conn(student, teacher)
    expected, attn = patch_group_ref(*qkv_ref(conn, student, teacher), grid,
                                     groups)
    assert out.shape == teacher.shape
    assert rel_err(out, expected) <= 1e-6
    assert rel_err(conn.last_attention, attn) <= 1e-6
    # warned once per connector
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        conn(student, teacher)


def test_patch_group_remainder_rows_and_columns_are_not_dropped():
    torch.manual_seed(0)
    conn = TaTConnector(4, 4, mode='patch_group', patch_grid=(2, 2),
                        num_groups=1)
    student = torch.randn(2, 4, 5, 7, requires_grad=True)
    teacher = torch.randn(2, 4, 5, 7)
    with pytest.warns(UserWarning):
        out = conn(student, teacher)
    # the last row and column of the output depend on the student
    out[:, :, -1, :].sum().backward(retain_graph=True)
    assert student.grad[:, :, -1, :].abs().sum() > 0
    student.grad = None
    out[:, :, :, -1].sum().backward()
    assert student.grad[:, :, :, -1].abs().sum() > 0


# --------------------------------------------------------------- anchor ---
@pytest.mark.parametrize('size,anchor', [
    ((8, 12), (4, 3)),        # divisible: 2x4 cells
    ((7, 10), (3, 4)),        # unequal, overlapping adaptive cells
    ((3, 5), (4, 4)),         # anchor grid larger than the map: clamped
])
def test_anchor_value_both_outputs(size, anchor):
    torch.manual_seed(0)
    up = make(6, 10, mode='anchor', anchor_size=anchor)
    grid_only = make(6, 10, mode='anchor', anchor_size=anchor,
                     anchor_output='anchor')
    grid_only.load_state_dict(up.state_dict())
    student, teacher = inputs(2, 6, 10, size)
    grid = (min(anchor[0], size[0]), min(anchor[1], size[1]))
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        out_up = up(student, teacher)
        out_grid = grid_only(student, teacher)
    q, k, v = qkv_ref(up, student, teacher)
    expected, attn = global_ref(pool_ref(q, grid), pool_ref(k, grid),
                                pool_ref(v, grid), 1)
    assert out_grid.shape == (2, 10, *grid)
    assert rel_err(out_grid, expected) <= 1e-6
    assert rel_err(grid_only.last_attention, attn) <= 1e-6
    assert up.last_attention.shape == (2, 1, grid[0] * grid[1],
                                       grid[0] * grid[1])
    assert out_up.shape == teacher.shape
    assert rel_err(out_up, unpool_ref(expected, size)) <= 1e-6
    # loss targets
    assert rel_err(grid_only.teacher_target(teacher),
                   pool_ref(teacher, grid)) <= 1e-6
    assert torch.equal(up.teacher_target(teacher), teacher)
    assert rel_err(up.pool_teacher(teacher), pool_ref(teacher, grid)) <= 1e-6


def test_anchor_warns_once_when_cells_are_unequal():
    conn = TaTConnector(4, 4, mode='anchor', anchor_size=(3, 4))
    student, teacher = torch.randn(2, 4, 7, 10), torch.randn(2, 4, 7, 10)
    with pytest.warns(UserWarning, match='anchor grid'):
        conn(student, teacher)
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        conn(student, teacher)
        conn(torch.randn(2, 4, 8, 8), torch.randn(2, 4, 8, 8))


def test_anchor_upsampled_mse_has_the_paper_gradients():
    """MSE(up(S'), T) = MSE(S', pool(T)) + const for equal anchor cells."""
    torch.manual_seed(0)
    up = make(6, 8, mode='anchor', anchor_size=(2, 3))
    grid_only = make(6, 8, mode='anchor', anchor_size=(2, 3),
                     anchor_output='anchor')
    grid_only.load_state_dict(up.state_dict())
    teacher = torch.randn(2, 8, 6, 9, dtype=torch.float64)
    losses, grads = [], []
    for conn, seed in ((up, 1), (grid_only, 1), (up, 2), (grid_only, 2)):
        student = torch.randn(2, 6, 6, 9, dtype=torch.float64,
                              generator=torch.Generator().manual_seed(seed),
                              requires_grad=True)
        conn.zero_grad()
        out = conn(student, teacher)
        loss = ((out - conn.teacher_target(teacher)) ** 2).mean()
        loss.backward()
        losses.append(loss.item())
        grads.append(torch.cat([student.grad.flatten()] +
                               [p.grad.flatten() for p in conn.parameters()]))
    # within-cell variance of the teacher: the constant gap
    cell = teacher.reshape(2, 8, 2, 3, 3, 3)
    gap = cell.var(dim=(3, 5), unbiased=False).mean().item()
    assert abs((losses[0] - losses[1]) - gap) <= 1e-9
    assert abs((losses[2] - losses[3]) - gap) <= 1e-9
    assert rel_err(grads[0], grads[1]) <= 1e-6
    assert rel_err(grads[2], grads[3]) <= 1e-6
    assert rel_err(grads[2], grads[0]) > 1e-3  # not a constant


# ------------------------------------------------------- shared checks ---
@pytest.mark.parametrize('mode', ['global', 'patch_group', 'anchor'])
def test_gradients_student_and_params_never_teacher(mode):
    torch.manual_seed(0)
    conn = TaTConnector(4, 6, mode=mode, patch_grid=(2, 2), num_groups=2,
                        anchor_size=(2, 2))
    student = torch.randn(2, 4, 4, 4, requires_grad=True)
    teacher = torch.randn(2, 6, 4, 4, requires_grad=True)
    out = conn(student, teacher)
    ((out - teacher.detach()) ** 2).mean().backward()
    assert student.grad is not None and student.grad.abs().sum() > 0
    for name, param in conn.named_parameters():
        assert param.grad is not None, name
        if name == 'key.bn.bias':
            # adds q_i . beta to every logit of row i: softmax-invariant
            assert param.grad.abs().max() < 1e-6
        else:
            assert param.grad.abs().sum() > 1e-6, name
    assert teacher.grad is None
    names = {name.split('.')[0] for name, _ in conn.named_parameters()}
    assert names == {'query', 'value', 'key'}


@pytest.mark.parametrize('mode,extra', [
    ('global', {}),
    ('patch_group', {}),                               # paper grid 16 x 16
    ('patch_group', dict(patch_grid=4, num_groups=8)),
    ('anchor', {}),                                    # anchors 32 -> 16
])
def test_pspnet_stage4_shapes(mode, extra):
    """PSPNet stage 4 at 1/8: 512 student, 2048 teacher channels."""
    torch.manual_seed(0)
    conn = TaTConnector(512, 2048, mode=mode, **extra)
    student = torch.randn(1, 512, 16, 16)
    teacher = torch.randn(1, 2048, 16, 16)
    out = conn(student, teacher)
    assert out.shape == (1, 2048, 16, 16) and torch.isfinite(out).all()
    assert torch.allclose(conn.last_attention.sum(-1),
                          torch.ones(conn.last_attention.shape[:-1]),
                          atol=1e-5)


def test_fpn_levels():
    """Five FPN levels (strides 8-128 of a 128 x 96 input), 256 channels."""
    torch.manual_seed(0)
    conns = [TaTConnector(256, 256) for _ in range(5)]
    for conn, size in zip(conns, [(16, 12), (8, 6), (4, 3), (2, 2), (1, 1)]):
        student = torch.randn(2, 256, *size)
        teacher = torch.randn(2, 256, *size)
        out = conn(student, teacher)
        assert out.shape == (2, 256, *size)
        hw = size[0] * size[1]
        assert conn.last_attention.shape == (2, 1, hw, hw)


def test_keep_attention_off():
    conn = TaTConnector(4, 4, keep_attention=False)
    conn(torch.randn(2, 4, 3, 3), torch.randn(2, 4, 3, 3))
    assert conn.last_attention is None


def test_half_precision_attention_in_float32():
    conn = TaTConnector(4, 6).to(torch.bfloat16)
    out = conn(torch.randn(2, 4, 3, 3, dtype=torch.bfloat16),
               torch.randn(2, 6, 3, 3, dtype=torch.bfloat16))
    assert out.dtype == torch.bfloat16
    assert conn.last_attention.dtype == torch.float32


def test_errors_name_the_problem():
    conn = TaTConnector(4, 6)
    with pytest.raises(ValueError, match='teacher'):
        conn(torch.randn(1, 4, 3, 3))
    with pytest.raises(ValueError, match='spatial size'):
        conn(torch.randn(1, 4, 3, 3), torch.randn(1, 6, 4, 4))
    with pytest.raises(ValueError, match='channels'):
        conn(torch.randn(1, 5, 3, 3), torch.randn(1, 6, 3, 3))
    with pytest.raises(ValueError, match='num_groups'):
        TaTConnector(4, 6, mode='patch_group', patch_grid=(3, 3),
                     num_groups=2)
    with pytest.raises(ValueError, match='num_heads'):
        TaTConnector(4, 6, num_heads=4)
    with pytest.raises(ValueError, match='mode'):
        TaTConnector(4, 6, mode='local')
    with pytest.raises(ValueError, match='anchor_output'):
        TaTConnector(4, 6, anchor_output='nearest')


def test_registry():
    conn = MODELS.build(dict(type='TaTConnector', in_channels=4,
                             out_channels=8, mode='patch_group',
                             patch_grid=(2, 2), num_groups=2))
    assert conn.mode == 'patch_group' and conn.num_groups == 2


def test_attention_map_global_anchor_and_patch_group():
    torch.manual_seed(3)
    s, t = torch.randn(2, 4, 4, 4), torch.randn(2, 6, 4, 4)
    conn = TaTConnector(4, 6, mode='global', num_heads=2).eval()
    conn(s, t)
    attn = conn.last_attention
    got = conn.attention_map((4, 4), (1, 2), sample=1, head=1)
    assert torch.equal(got, attn[1, 1, 1 * 4 + 2].reshape(4, 4))
    mean = conn.attention_map((4, 4), (1, 2), sample=1)
    assert torch.allclose(mean, attn[1, :, 6].mean(0).reshape(4, 4))
    assert mean.sum().item() == pytest.approx(1.0, abs=1e-5)

    conn = TaTConnector(4, 6, mode='anchor', anchor_size=(2, 2)).eval()
    conn(s, t)
    # (3, 1) lies in anchor cell (1, 0) of the 2x2 grid
    got = conn.attention_map((4, 4), (3, 1), head=0)
    assert torch.equal(got, conn.last_attention[0, 0, 2].reshape(2, 2))

    conn = TaTConnector(4, 6, mode='patch_group', patch_grid=(2, 2),
                        num_groups=2).eval()
    conn(s, t)
    # query (0, 3): patch (0, 1) = index 1 of group 0 (patches 0 and 1),
    # in-patch position (0, 1) -> row 1 of the group's 2x2 attention
    got = conn.attention_map((4, 4), (0, 3))
    local = conn.last_attention[0, 0, 1].reshape(2, 2)
    assert torch.equal(got[:2, :2], local) and torch.equal(got[:2, 2:], local)
    assert torch.equal(got[2:], torch.zeros(2, 4))
    with pytest.raises(ValueError, match='outside'):
        conn.attention_map((4, 4), (4, 0))
    conn.last_attention = None
    with pytest.raises(RuntimeError, match='forward first'):
        conn.attention_map((4, 4), (0, 0))


def test_patch_group_map_with_overlapping_patches():
    # a 5x7 map in a 2x3 grid: 3x3 patches whose starts overlap
    torch.manual_seed(4)
    s, t = torch.randn(1, 4, 5, 7), torch.randn(1, 6, 5, 7)
    conn = TaTConnector(4, 6, mode='patch_group', patch_grid=(2, 3),
                        num_groups=2).eval()
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        conn(s, t)
    # starts: rows (0, 2), columns (0, 2, 4); query (0, 0) is in patch 0
    # (group 0 = patches 0, 1, 2), local position (0, 0)
    local = conn.last_attention[0, 0, 0].reshape(3, 3)
    got = conn.attention_map((5, 7), (0, 0))
    assert torch.equal(got[0:3, 0:3], local)
    assert torch.equal(got[3:], torch.zeros(2, 7))


# ------------------------------------------- fused attention, kept map ---
needs_sdpa_scale = pytest.mark.skipif(
    not tat_module._SDPA_HAS_SCALE,
    reason='scaled_dot_product_attention(scale=...) needs torch >= 2.1')


def _count_calls(monkeypatch):
    """Count the fused-attention calls (with their ``scale``) and the
    explicit attention matrices the connector forms."""
    calls = dict(sdpa=[], matrix=0)
    sdpa = tat_module.F.scaled_dot_product_attention
    matrix = tat_module._attention_matrix

    def fake_sdpa(*args, **kwargs):
        calls['sdpa'].append(kwargs.get('scale'))
        return sdpa(*args, **kwargs)

    def fake_matrix(*args):
        calls['matrix'] += 1
        return matrix(*args)

    monkeypatch.setattr(tat_module.F, 'scaled_dot_product_attention',
                        fake_sdpa)
    monkeypatch.setattr(tat_module, '_attention_matrix', fake_matrix)
    return calls


@needs_sdpa_scale
@pytest.mark.parametrize('mode,extra,size', [
    ('global', dict(num_heads=2), (4, 6)),
    ('patch_group', dict(patch_grid=(2, 2), num_groups=4), (8, 8)),
    ('patch_group', dict(patch_grid=(2, 2), num_groups=4), (9, 11)),
    ('anchor', dict(anchor_size=(3, 4)), (6, 8)),
])
def test_forward_runs_fused_attention_and_forms_no_map(monkeypatch, mode,
                                                       extra, size):
    """Where the map is larger than the queries (more positions than
    channels per head), a training forward goes through
    scaled_dot_product_attention with scale=1.0 and forms no attention
    matrix; reading last_attention forms it once, equal to the one an eager
    forward keeps."""
    torch.manual_seed(0)
    lazy = make(4, 6, mode=mode, **extra)
    eager = make(4, 6, mode=mode, keep_attention=True, **extra)
    eager.load_state_dict(lazy.state_dict())
    student, teacher = inputs(2, 4, 6, size)
    calls = _count_calls(monkeypatch)
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        out_lazy = lazy(student.requires_grad_(True), teacher)
        assert calls == dict(sdpa=[1.0], matrix=0)
        out_lazy.pow(2).sum().backward()
        assert calls['matrix'] == 0  # nor does the backward
        out_eager = eager(student, teacher)
    assert calls == dict(sdpa=[1.0], matrix=1)
    assert rel_err(out_lazy.detach(), out_eager.detach()) <= 1e-6
    attn = lazy.last_attention
    assert calls['matrix'] == 2
    assert rel_err(attn, eager.last_attention) <= 1e-6
    assert not attn.requires_grad
    assert lazy.last_attention is attn  # formed once
    assert calls['matrix'] == 2


@pytest.mark.parametrize('mode,extra,size', [
    ('global', dict(num_heads=3), (1, 2)),
    ('patch_group', dict(patch_grid=(2, 2), num_groups=2), (4, 6)),
    ('anchor', dict(anchor_size=(2, 3)), (4, 6)),
])
def test_map_no_larger_than_the_queries_is_formed_and_kept(monkeypatch, mode,
                                                           extra, size):
    """Where the map has no more entries than the queries (patch groups and
    anchors: few positions, many channels), the attention is explicit, which
    keeps less for the backward than the fused kernel (the small map, not
    the output); the map of the forward is kept, detached, the values and
    gradients those of the fused path."""
    torch.manual_seed(0)
    conn = make(4, 6, mode=mode, **extra)
    student, teacher = inputs(2, 4, 6, size)
    calls = _count_calls(monkeypatch)
    student.requires_grad_(True)
    out = conn(student, teacher)
    assert calls == dict(sdpa=[], matrix=1)
    grad, = torch.autograd.grad(out.pow(2).sum(), student)
    attn = conn.last_attention
    assert not attn.requires_grad and calls['matrix'] == 1
    assert torch.allclose(attn.sum(-1), torch.ones_like(attn[..., 0]),
                          atol=1e-6)
    conn(student, teacher, keep_attention=False)
    assert conn.last_attention is None
    if not tat_module._SDPA_HAS_SCALE:
        return
    # the fused path on the same q, k, v
    q, k, v = (torch.randn(2, 3, 4, 5, dtype=torch.float64,
                           requires_grad=True) for _ in range(3))
    explicit = torch.matmul(tat_module._attention_matrix(q, k), v)
    fused = F.scaled_dot_product_attention(q, k, v, scale=1.0)
    assert rel_err(explicit, fused) <= 1e-12
    assert all(rel_err(a, b) <= 1e-12 for a, b in zip(
        torch.autograd.grad(explicit.sum(), (q, k, v)),
        torch.autograd.grad(fused.sum(), (q, k, v))))


@needs_sdpa_scale
def test_keep_attention_argument(monkeypatch):
    torch.manual_seed(0)
    student, teacher = inputs(2, 4, 6, (3, 4))
    conn = make(4, 6, keep_attention=False)
    calls = _count_calls(monkeypatch)
    conn(student, teacher)
    assert conn.last_attention is None and calls['matrix'] == 0
    # the forward argument asks for this call only
    conn(student, teacher, keep_attention=True)
    assert calls['matrix'] == 1
    kept = conn.last_attention
    assert kept.shape == (2, 1, 12, 12)
    conn(student, teacher)
    assert conn.last_attention is None
    # on demand by default; a later forward drops the earlier q and k
    conn = make(4, 6)
    conn(student, teacher)
    assert conn._pending is not None
    conn(student, teacher, keep_attention=False)
    assert conn._pending is None and conn.last_attention is None
    with pytest.raises(ValueError, match='keep_attention'):
        TaTConnector(4, 6, keep_attention='yes')


def test_on_demand_map_keeps_forward_precision_under_autocast():
    conn = TaTConnector(4, 6)
    conn(torch.randn(2, 4, 3, 3), torch.randn(2, 6, 3, 3))
    with torch.autocast('cpu', dtype=torch.bfloat16):
        attn = conn.last_attention
    assert attn.dtype == torch.float32
    assert torch.allclose(attn.sum(-1), torch.ones(2, 1, 9), atol=1e-6)


def test_patch_group_overlap_counts_without_bincount(monkeypatch):
    """Overlapping patches are averaged with counts computed on the device
    (torch.bincount reads its maximum back to the host on a GPU)."""
    def no_bincount(*args, **kwargs):
        raise AssertionError('bincount called')

    monkeypatch.setattr(torch, 'bincount', no_bincount)
    torch.manual_seed(0)
    conn = make(6, 8, mode='patch_group', patch_grid=(3, 4), num_groups=2)
    student, teacher = inputs(2, 6, 8, (7, 10))
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        out = conn(student, teacher)
    expected, _ = patch_group_ref(*qkv_ref(conn, student, teacher), (3, 4),
                                  2)
    assert rel_err(out, expected) <= 1e-6


# ---------------------------------------------------- shared embeddings ---
def _calls(module):
    calls = []
    module.register_forward_hook(lambda *args: calls.append(1))
    return calls


def test_shared_embeddings_are_computed_once_with_the_same_values():
    """patch_group and anchor sharing theta/phi/gamma (the reference code's
    one set of embeddings for both losses) give the outputs and gradients
    of two connectors holding copies of the same weights, computing the
    embeddings once per forward."""
    torch.manual_seed(0)
    kwargs = dict(patch_grid=(2, 2), num_groups=2)
    group = make(6, 10, mode='patch_group', **kwargs)
    anchor = make(6, 10, mode='anchor', anchor_size=(2, 3),
                  embeddings_from='patch_group')
    anchor.share_embeddings(group)
    assert anchor.query is group.query and anchor.key is group.key
    assert anchor.value is group.value
    # the same computation with copied, unshared weights
    group_copy = make(6, 10, mode='patch_group', **kwargs)
    anchor_copy = make(6, 10, mode='anchor', anchor_size=(2, 3))
    group_copy.load_state_dict(group.state_dict())
    anchor_copy.load_state_dict(group.state_dict())
    calls = _calls(group.query.conv)
    student, teacher = inputs(2, 6, 10, (8, 12))
    student.requires_grad_(True)
    shared = group(student, teacher).sum() + 0.4 * anchor(
        student, teacher).sum()
    assert len(calls) == 1  # the second connector reused the embeddings
    copied = group_copy(student, teacher).sum() + 0.4 * anchor_copy(
        student, teacher).sum()
    assert rel_err(shared, copied) <= 1e-12
    grads = torch.autograd.grad(shared, [student, group.query.conv.weight])
    grads_copy = torch.autograd.grad(copied, [student])[0], (
        torch.autograd.grad(
            group_copy(student, teacher).sum()
            + 0.4 * anchor_copy(student, teacher).sum(),
            [group_copy.query.conv.weight, anchor_copy.query.conv.weight]))
    assert rel_err(grads[0], grads_copy[0]) <= 1e-12
    assert rel_err(grads[1], sum(grads_copy[1])) <= 1e-12
    # the shared entry is gone once both took it: new inputs recompute
    group(*inputs(2, 6, 10, (8, 12)))
    anchor(*inputs(2, 6, 10, (8, 12)))
    assert len(calls) == 3
    # a shared parameter is listed once
    params = list(torch.nn.ModuleList([group, anchor]).parameters())
    assert len(params) == len(list(group.parameters()))


def test_shared_embeddings_on_other_features_keep_nothing():
    """A connector that shares embeddings but gets other features (a
    teacher copy, not an alias) computes its own, says so once, and no
    entry is left behind for a later step."""
    torch.manual_seed(0)
    group = make(6, 10, mode='patch_group', patch_grid=(2, 2),
                 num_groups=2)
    anchor = make(6, 10, mode='anchor', anchor_size=(2, 3),
                  embeddings_from='patch_group')
    anchor.share_embeddings(group)
    calls = _calls(group.query.conv)
    student, teacher = inputs(2, 6, 10, (8, 12))
    group(student, teacher)
    with pytest.warns(UserWarning, match='computed twice'):
        anchor(student, teacher.clone())
    assert len(calls) == 2
    shared = group._embeddings
    assert shared._outputs is None and shared._inputs is None
    with warnings.catch_warnings():
        warnings.simplefilter('error')  # once
        group(student, teacher)
        anchor(student, teacher.clone())


def test_shared_embeddings_need_the_same_channels():
    with pytest.raises(ValueError, match='same in_channels, out_channels'):
        TaTConnector(4, 8, mode='anchor').share_embeddings(
            TaTConnector(4, 16))
    with pytest.raises(ValueError, match='key_embed'):
        TaTConnector(4, 8).share_embeddings(TaTConnector(4, 8,
                                                         key_embed=False))
    with pytest.raises(TypeError, match='another TaTConnector'):
        TaTConnector(4, 8).share_embeddings(torch.nn.Identity())


# -------------------------------------------------------------- with_cp ---
def _saved_bytes(fn):
    """Bytes of the distinct storages autograd keeps for the backward of
    what ``fn`` computes (the tensors it saves directly)."""
    storages = {}

    def pack(tensor):
        storage = tensor.untyped_storage()
        storages[storage.data_ptr()] = storage.nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = fn()
    return out, sum(storages.values())


@pytest.mark.parametrize('mode,kwargs', [
    ('global', dict(num_heads=2)),
    ('patch_group', dict(patch_grid=(2, 3), num_groups=3)),
    ('anchor', dict(anchor_size=(2, 3))),
])
def test_with_cp_same_values_and_gradients_less_kept(mode, kwargs):
    """with_cp recomputes the embedding convs' outputs for the norms'
    backward: the same outputs, gradients and BN statistics, and three
    (N, C_t, H, W) maps fewer kept from the forward."""
    torch.manual_seed(0)
    plain = make(6, 10, mode=mode, **kwargs)
    recomputed = make(6, 10, mode=mode, with_cp=True, **kwargs)
    recomputed.load_state_dict(plain.state_dict())
    student, teacher = inputs(2, 6, 10, (8, 12))
    results, peaks = [], []
    for conn in (plain, recomputed):
        s = student.clone().requires_grad_(True)
        out, kept = _saved_bytes(lambda: conn(s, teacher))
        loss = (out * torch.linspace(-1, 1, out.numel(),
                                     dtype=out.dtype).view_as(out)).sum()
        params = [p for p in conn.parameters()]
        grads = torch.autograd.grad(loss, [s] + params)
        results.append((out, kept, grads))
        # what is alive at the peak of a forward + backward (the maps must
        # be freed, not only left out of what autograd saves)
        s.grad = None
        peaks.append(cpu_peak_allocated(
            lambda: conn(s, teacher, keep_attention=False).square().sum()
            .backward())[1])
    (out, kept, grads), (out_cp, kept_cp, grads_cp) = results
    assert torch.equal(out, out_cp)
    for g, g_cp in zip(grads, grads_cp):
        assert grad_err(g_cp, g, grads) <= 1e-12
    for name, buf in plain.named_buffers():
        assert torch.equal(buf, dict(recomputed.named_buffers())[name]), name
    one_map = 2 * 10 * 8 * 12 * 8  # (N, C_t, H, W) float64
    assert 3 * one_map <= kept - kept_cp < 3 * one_map + one_map // 4
    assert peaks[0] - peaks[1] >= 2 * one_map, peaks


def test_with_cp_under_autocast_recomputes_in_the_forward_dtype():
    torch.manual_seed(0)
    plain = TaTConnector(6, 10, mode='patch_group', patch_grid=(2, 2),
                         num_groups=2)
    recomputed = TaTConnector(6, 10, mode='patch_group', patch_grid=(2, 2),
                              num_groups=2, with_cp=True)
    recomputed.load_state_dict(plain.state_dict())
    student = torch.randn(2, 6, 8, 8)
    teacher = torch.randn(2, 10, 8, 8)
    grads = []
    for conn in (plain, recomputed):
        s = student.clone().requires_grad_(True)
        with torch.autocast('cpu', dtype=torch.bfloat16):
            out = conn(s, teacher)
        grads.append(torch.autograd.grad(out.float().square().sum(),
                                         [s, conn.query.conv.weight]))
    for g, g_cp in zip(*grads):
        assert torch.equal(g, g_cp)


def test_with_cp_follows_the_connector_whose_embeddings_it_uses():
    def pair(with_cp):
        owner = make(6, 10, mode='patch_group', patch_grid=(2, 2),
                     num_groups=2, with_cp=with_cp)
        anchor = make(6, 10, mode='anchor', anchor_size=(2, 2),
                      embeddings_from='patch_group')
        anchor.share_embeddings(owner)
        return owner, anchor

    torch.manual_seed(0)
    owner, anchor = pair(True)
    assert anchor.with_cp
    plain_owner, plain_anchor = pair(False)
    plain_owner.load_state_dict(owner.state_dict())
    student, teacher = inputs(2, 6, 10, (4, 4))
    student.requires_grad_(True)
    out_cp, kept_cp = _saved_bytes(
        lambda: owner(student, teacher).sum() + anchor(student, teacher).sum())
    out, kept = _saved_bytes(lambda: plain_owner(student, teacher).sum() +
                             plain_anchor(student, teacher).sum())
    assert torch.equal(out, out_cp)
    assert kept - kept_cp >= 3 * 2 * 10 * 4 * 4 * 8  # three conv outputs
    with pytest.raises(ValueError, match='set with_cp=True on that one'):
        make(6, 10, mode='anchor', with_cp=True).share_embeddings(
            plain_owner)
    # without gradients nothing is recomputed: the plain forward
    owner.eval()
    plain_owner.eval()
    with torch.no_grad():
        assert torch.equal(owner(student, teacher),
                           plain_owner(student, teacher))


# ------------------------------------------- patch-group attention memory ---
def patch_group_autograd_ref(q, k, v, grid, groups):
    """Plain autograd through the reference loop (its own gradients)."""
    return patch_group_ref(q, k, v, grid, groups)[0]


@pytest.mark.parametrize('in_place', [True, False])
@pytest.mark.parametrize('size,grid,groups,keep', [
    ((8, 16), (4, 8), 16, None),   # a group within a row of patches (2 of 8)
    ((8, 8), (4, 4), 2, True),     # a group is whole rows of patches
    ((32, 16), (16, 8), 32, False),  # 4 patches of 2x2 per group
    ((64, 8), (32, 4), 64, None),  # two rows of groups per slice
    ((8, 8), (4, 4), None, None),  # one group per patch
])
def test_patch_group_gradients_and_mse_match_autograd_reference(
        size, grid, groups, keep, in_place):
    """The patch-group attention (sliced forward and backward, within
    gradients_in_place the gradients written over its saved tokens) and
    MSELoss (there, the gradient written over the connector's output) give
    the gradients of plain autograd on the reference loop."""
    from mmdistill.losses import MSELoss
    from mmdistill.losses.functional import output_is_private
    from mmdistill.utils.tensor import gradients_in_place
    torch.manual_seed(0)
    conn = make(6, 10, mode='patch_group', patch_grid=grid,
                num_groups=groups, keep_attention=keep)
    student, teacher = inputs(2, 6, 10, size)
    params = list(conn.parameters())
    s = student.clone().requires_grad_(True)
    context = gradients_in_place() if in_place else \
        contextlib.nullcontext()
    with context:
        out = conn(s, teacher)
        kept = out.detach().clone()
        assert output_is_private(out)  # the sliced path ran
        loss = MSELoss(loss_weight=0.3)(out, teacher)
    grads = torch.autograd.grad(loss, [s] + params)
    # the output holds its gradient after the backward only in place
    assert torch.equal(out.detach(), kept) is not in_place
    n_groups = groups or grid[0] * grid[1]
    _, attn = patch_group_ref(*qkv_ref(conn, student, teacher), grid,
                              n_groups)
    if keep is False:
        assert conn.last_attention is None
    else:
        assert rel_err(conn.last_attention, attn) <= 1e-10

    s_ref = student.clone().requires_grad_(True)
    ref_params = [p.detach().clone().requires_grad_(True) for p in params]
    names = [n for n, _ in conn.named_parameters()]
    byname = dict(zip(names, ref_params))

    def embed(prefix, x):
        y = F.conv2d(x, byname[f'{prefix}.conv.weight'])
        mean = y.mean(dim=(0, 2, 3), keepdim=True)
        var = ((y - mean)**2).mean(dim=(0, 2, 3), keepdim=True)
        y = (y - mean) / torch.sqrt(var + 1e-5)
        return y * byname[f'{prefix}.bn.weight'][None, :, None, None] + \
            byname[f'{prefix}.bn.bias'][None, :, None, None]

    out_ref = patch_group_autograd_ref(
        embed('query', s_ref), embed('key', teacher), embed('value', s_ref),
        grid, n_groups)
    loss_ref = 0.3 * ((out_ref - teacher)**2).sum() / teacher.numel()
    grads_ref = torch.autograd.grad(loss_ref, [s_ref] + ref_params)
    assert abs(loss.item() - loss_ref.item()) <= 1e-10 * loss_ref.item()
    for name, g, g_ref in zip(['student'] + names, grads, grads_ref):
        assert grad_err(g, g_ref, grads_ref) <= 1e-8, name


def test_patch_group_backward_holds_one_map_less():
    """At the backward's peak the patch-group attention + MSELoss hold the
    queries, keys and values and one more map (the output, turned into its
    gradient): two (N, C_t, H, W) maps fewer than plain autograd on the
    same explicit attention, which adds the output's gradient, and holds
    the output, its gradient and their token copies at once."""
    from mmdistill.losses import MSELoss
    from mmdistill.losses.functional import output_is_private
    from mmdistill.utils.tensor import gradients_in_place
    torch.manual_seed(0)
    grid, groups, size, c = (4, 8), 8, (16, 32), 64
    teacher = torch.randn(2, c, *size)
    one_map = teacher.numel() * 4
    layout = tat_module._GroupLayout(2, c, grid[0], size[0] // grid[0],
                                     grid[1], size[1] // grid[1], groups)

    def ours(q, k, v):
        out = tat_module._GroupAttention.apply(q, k, v, layout, None)
        assert output_is_private(out)
        return MSELoss()(out, teacher)

    def plain(q, k, v):
        attn = torch.softmax(q @ k.transpose(-1, -2), -1)
        out = layout.patches(attn @ v).reshape(teacher.shape)
        return F.mse_loss(out, teacher)

    torch.manual_seed(1)
    tokens = [layout.tokens(torch.randn(layout.patch_shape) * 0.1)
              for _ in range(3)]
    peaks, grads = [], []
    for fn in (ours, plain):
        @gradients_in_place()
        def step():
            # the queries, keys and values: intermediates (the attention's
            # own), their gradients what the step returns
            qkv = [(x * 1.0).requires_grad_(True) for x in tokens]
            return torch.autograd.grad(fn(*qkv), qkv)
        got, peak = cpu_peak_allocated(step)
        peaks.append(peak)
        grads.append(got)
    for g, g_ref in zip(*grads):
        assert rel_err(g, g_ref) <= 1e-5
    assert peaks[1] - peaks[0] >= 1.5 * one_map, (peaks, one_map)


def test_patch_group_backward_in_place_runs_once_only_there():
    """Outside gradients_in_place a second backward (retain_graph) and an
    in-place change of the output work; inside, the second backward stops
    with a message saying why."""
    from mmdistill.losses import MSELoss
    from mmdistill.utils.tensor import gradients_in_place
    conn = TaTConnector(4, 6, mode='patch_group', patch_grid=(2, 2),
                        num_groups=2)
    student = torch.randn(2, 4, 4, 4, requires_grad=True)
    teacher = torch.randn(2, 6, 4, 4)
    out = conn(student, teacher)
    loss = MSELoss()(out.mul_(2), teacher)
    (first, ) = torch.autograd.grad(loss, [student], retain_graph=True)
    (second, ) = torch.autograd.grad(loss, [student])
    assert torch.equal(first, second)
    with gradients_in_place():
        loss = MSELoss()(conn(student, teacher), teacher)
    loss.backward(retain_graph=True)
    with pytest.raises(RuntimeError, match='ran twice.*gradients_in_place'):
        loss.backward()


def test_with_cp_norm_backward_in_place_only_where_it_is_the_same():
    """The in-place batch-norm backward of with_cp applies to a norm on the
    batch's statistics in float32/64; other norms keep torch's backward,
    with the same gradients as without with_cp."""
    bn = torch.nn.BatchNorm2d(4)
    x = torch.randn(2, 4, 3, 3)
    assert tat_module._norm_in_place_ok(bn, x)
    assert tat_module._norm_in_place_ok(torch.nn.SyncBatchNorm(4), x)
    # mmengine's 'SyncBN' (a subclass, the same forward)
    assert tat_module._norm_in_place_ok(
        MODELS.build(dict(type='SyncBN', num_features=4)), x)

    class OwnForward(torch.nn.BatchNorm2d):
        def forward(self, x):
            return super().forward(x) * 2

    assert not tat_module._norm_in_place_ok(OwnForward(4), x)
    assert not tat_module._norm_in_place_ok(bn.eval(), x)
    assert not tat_module._norm_in_place_ok(torch.nn.GroupNorm(2, 4), x)
    assert not tat_module._norm_in_place_ok(bn.train(), x.half())
    with torch.autocast('cpu', dtype=torch.bfloat16):
        assert not tat_module._norm_in_place_ok(bn, x)
    torch.manual_seed(0)
    for norm_cfg in (dict(type='GN', num_groups=2), dict(type='BN')):
        plain = TaTConnector(6, 10, mode='anchor', anchor_size=(2, 2),
                             norm_cfg=norm_cfg).double()
        recomputed = TaTConnector(6, 10, mode='anchor', anchor_size=(2, 2),
                                  norm_cfg=norm_cfg, with_cp=True).double()
        recomputed.load_state_dict(plain.state_dict())
        student, teacher = inputs(2, 6, 10, (4, 6))
        grads = []
        for conn in (plain, recomputed):
            s = student.clone().requires_grad_(True)
            out = conn(s, teacher)
            grads.append(torch.autograd.grad(
                (out * out.detach().sin()).sum(),
                [s] + list(conn.parameters())))
        for g, g_cp in zip(*grads):
            assert grad_err(g_cp, g, grads[0]) <= 1e-12


def test_patch_group_under_bfloat16_autocast_close_to_float32():
    """Under autocast the sliced attention and its backward compute in
    autocast's dtype (as the explicit attention would): gradients within
    bfloat16's precision of float32's (5.4% here; the explicit attention
    with autograd's backward: 5.2%)."""
    from mmdistill.losses import MSELoss
    torch.manual_seed(0)
    conn = TaTConnector(8, 16, mode='patch_group', patch_grid=(4, 4),
                        num_groups=4)
    student = torch.randn(2, 8, 8, 16)
    teacher = torch.randn(2, 16, 8, 16)
    grads = []
    for amp in (False, True):
        s = student.clone().requires_grad_(True)
        with torch.autocast('cpu', dtype=torch.bfloat16, enabled=amp):
            loss = MSELoss()(conn(s, teacher), teacher)
        grads.append(torch.autograd.grad(loss, [s] + list(conn.parameters())))
    # key.bn.bias's gradient is 0 up to rounding: measured against the rest
    scale = 0.1 * max(g.norm() for g in grads[0])
    for g, g_amp in zip(*grads):
        assert g_amp.dtype == g.dtype
        assert (g_amp - g).norm() <= 0.1 * max(g.norm(), scale)


def test_anchor_pool_and_regroup_gradients_add_in_place():
    """The anchor's cell mean and the patch-group's regrouping (the two
    uses of shared embeddings) give autograd's values and gradients, each
    gradient one new (N, C, H, W) tensor of its own, which autograd adds
    the other to in place: their backward makes two maps (mean-then-reshape
    and reshaping the tokens back give views, which may cost a third map
    for the sum)."""
    size, grid, c = (16, 32), (4, 8), 16
    layout = tat_module._GroupLayout(2, c, grid[0], size[0] // grid[0],
                                     grid[1], size[1] // grid[1], 8)
    assert layout.order is not None
    torch.manual_seed(0)
    x = torch.randn(2, c, *size, dtype=torch.float64)
    weights = (torch.randn(2, c, *grid, dtype=torch.float64),
               torch.randn(layout.token_shape, dtype=torch.float64))

    def ours(x):
        return (tat_module._CellMean.apply(x, grid),
                tat_module._Tokens.apply(x, layout))

    def plain(x):  # the mean over cells of a view: nothing of x kept
        cells = x.reshape(2, c, grid[0], size[0] // grid[0], grid[1],
                          size[1] // grid[1])
        return (cells.mean(dim=(3, 5)),
                layout.tokens(x.reshape(layout.patch_shape)))

    results = []
    for fn in (ours, plain):
        leaf = x.clone().requires_grad_(True)
        pooled, tokens = fn(leaf)
        loss = (pooled * weights[0]).sum() + (tokens * weights[1]).sum()
        results.append((pooled, tokens, torch.autograd.grad(loss, leaf)[0]))
    for got, ref in zip(*results):
        assert rel_err(got, ref) <= 1e-14
    assert rel_err(results[0][0], F.adaptive_avg_pool2d(x, grid)) <= 1e-14
    # each backward's own output: a tensor of the input's layout, no view
    leaf = x.clone().requires_grad_(True)
    pooled, tokens = ours(leaf)
    for out, grad in ((pooled, weights[0]), (tokens, weights[1])):
        g = out.grad_fn.apply(grad)[0]
        assert g._base is None and g.is_contiguous() and g.shape == x.shape

    one_map = x.numel() * 4
    leaf = x.float().requires_grad_(True)
    pooled, tokens = ours(leaf * 1.0)  # of an intermediate, as in TaT
    loss = (pooled * weights[0].float()).sum() + \
        tokens.reshape(-1).dot(weights[1].float().reshape(-1))
    del pooled, tokens
    # what the backward allocates beyond what is held before it: the two
    # gradients, summed in place, and small ones (plain autograd's figure
    # varies: three maps, or two, with the torch version and state)
    _, peak = cpu_peak_allocated(lambda: torch.autograd.grad(loss, leaf))
    assert peak <= 2 * one_map + 4 * 4 * weights[0].numel() < 3 * one_map, \
        (peak, one_map)


def test_with_cp_recomputes_a_pointwise_conv_as_matrix_products():
    """The backward's recompute of a 1x1 conv's output (one product per
    sample, no copy of the input) gives the conv's values; other convs and
    inputs that are not contiguous go to the conv itself."""
    torch.manual_seed(0)
    x = torch.randn(2, 6, 5, 7, dtype=torch.float64)
    for kwargs in (dict(kernel_size=1, bias=True),
                   dict(kernel_size=1, bias=False),
                   dict(kernel_size=3, padding=1, bias=True)):
        conv = torch.nn.Conv2d(6, 10, **kwargs).double()
        for given in (x, x.to(memory_format=torch.channels_last)):
            got = tat_module._ConvRecompute(conv, given, torch.float64)()
            assert rel_err(got, conv(given).detach()) <= 1e-14
    conv = torch.nn.Conv2d(6, 10, 1)
    got = tat_module._ConvRecompute(conv, x, torch.float32)()
    assert got.dtype == torch.float32
    assert rel_err(got, conv(x.float()).detach()) <= 1e-6


def test_cell_mean_and_regroup_are_twice_differentiable():
    """Their backwards are plain ops: a second derivative (create_graph)
    is autograd's, as for the mean and reshape they replace."""
    layout = tat_module._GroupLayout(2, 3, 2, 2, 4, 2, 4)
    x = torch.randn(2, 3, 4, 8, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradgradcheck(
        lambda x: tat_module._CellMean.apply(x, (2, 4)), (x, ))
    assert torch.autograd.gradgradcheck(
        lambda x: tat_module._Tokens.apply(x, layout), (x, ))
    conn = make(3, 4, mode='anchor', anchor_size=(2, 2))
    student, teacher = inputs(2, 3, 4, (4, 4))
    student.requires_grad_(True)
    assert torch.autograd.gradgradcheck(
        lambda s: conn(s, teacher).square().sum(), (student, ))


def test_shared_anchor_and_patch_group_take_the_in_place_paths(monkeypatch):
    """A patch-group connector and an anchor connector sharing embeddings
    (the TaT config) pool with the cell mean, regroup with the tokens'
    function and, with_cp on the CPU, recompute the 1x1 convs without a
    conv call; the key embedding's backward runs after the others'."""
    calls = {'cell_mean': 0, 'tokens': 0, 'conv2d_in_backward': 0}
    backward = [False]
    for name, key in (('_CellMean', 'cell_mean'), ('_Tokens', 'tokens')):
        fn = getattr(tat_module, name)
        original = fn.apply

        def counted(*args, _original=original, _key=key):
            calls[_key] += 1
            return _original(*args)
        monkeypatch.setattr(fn, 'apply', counted)
    conv2d = F.conv2d

    def counted_conv2d(*args, **kwargs):
        calls['conv2d_in_backward'] += backward[0]
        return conv2d(*args, **kwargs)
    monkeypatch.setattr(F, 'conv2d', counted_conv2d)

    owner = make(6, 10, mode='anchor', anchor_size=(2, 2), with_cp=True)
    group = make(6, 10, mode='patch_group', patch_grid=(2, 2), num_groups=2,
                 embeddings_from='anchor')
    group.share_embeddings(owner)
    student, teacher = inputs(2, 6, 10, (4, 4))
    student.requires_grad_(True)
    order = []
    for name in ('query', 'key', 'value'):
        getattr(owner, name).conv.weight.register_hook(
            lambda grad, name=name: order.append(name))
    loss = owner(student, teacher).square().sum() + \
        group(student, teacher).square().sum()
    backward[0] = True
    loss.backward()
    assert calls == {'cell_mean': 3, 'tokens': 3, 'conv2d_in_backward': 0}
    # the key embedding's backward (on the teacher's channels) comes last
    assert order[-1] == 'key' and sorted(order) == ['key', 'query', 'value']
