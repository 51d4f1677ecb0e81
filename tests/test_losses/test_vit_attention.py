"""Tests of ViTAttentionLoss (ViT attention distillation, AttnDistill).

The references below compute everything with Python floats and loops (dot
products per head, a hand-written bicubic kernel, KL term by term), written
independently of the tensor code of the loss."""
import math
import os.path as osp

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from mmdistill.losses import ViTAttentionLoss
from mmdistill.losses.vit_attention import (class_attention,
                                            resize_patch_attention)
from mmdistill.registry import MODELS

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
CONFIG = osp.join(
    ROOT, 'configs/vit_attention/'
    'vit-attention_last-block_deit-small_deit-tiny_300e_in1k.py')


# --------------------------------------------------------------- references
def ref_attention(qkv, heads):
    """[n][h][j]: softmax_j of q_h(token 0) . k_h(token j) / sqrt(D), where
    the channels of qkv are [q heads..., k heads..., v heads...]."""
    n_batch, length, width = qkv.shape
    c = width // 3
    d = c // heads
    out = []
    for n in range(n_batch):
        rows = qkv[n].tolist()
        per_head = []
        for h in range(heads):
            q = rows[0][h * d:(h + 1) * d]
            logits = []
            for j in range(length):
                k = rows[j][c + h * d:c + (h + 1) * d]
                logits.append(sum(a * b for a, b in zip(q, k)) / math.sqrt(d))
            top = max(logits)
            exps = [math.exp(v - top) for v in logits]
            per_head.append([e / sum(exps) for e in exps])
        out.append(per_head)
    return out


def ref_kl(p, q):
    return sum(a * (math.log(a) - math.log(b)) for a, b in zip(p, q) if a > 0)


def _keys(x, a=-0.75):
    """Keys' cubic convolution kernel (PyTorch's bicubic, A = -0.75)."""
    x = abs(x)
    if x <= 1:
        return (a + 2) * x**3 - (a + 3) * x**2 + 1
    if x < 2:
        return a * x**3 - 5 * a * x**2 + 8 * a * x - 4 * a
    return 0.0


def _cubic_weights(size_in, size_out):
    """Row i of the 1-D resampling matrix, half-pixel centres, borders
    replicated."""
    scale = size_in / size_out
    rows = []
    for i in range(size_out):
        src = (i + 0.5) * scale - 0.5
        base = math.floor(src)
        row = [0.0] * size_in
        for tap in range(base - 1, base + 3):
            row[min(max(tap, 0), size_in - 1)] += _keys(src - tap)
        rows.append(row)
    return rows


def ref_resize(values, extra, side_out):
    """AttnDistill (b) on one head: keep the extra entries, bicubic-resize the
    patch grid, clamp at 0 (bicubic undershoots), renormalise to
    1 - sum(extra)."""
    patches = values[extra:]
    side_in = math.isqrt(len(patches))
    w = _cubic_weights(side_in, side_out)
    grid = [[patches[y * side_in + x] for x in range(side_in)]
            for y in range(side_in)]
    resized = []
    for oy in range(side_out):
        for ox in range(side_out):
            resized.append(
                sum(w[oy][y] * w[ox][x] * grid[y][x]
                    for y in range(side_in) for x in range(side_in)))
    resized = [max(v, 1e-300) for v in resized]
    mass = 1 - sum(values[:extra])
    total = sum(resized)
    return list(values[:extra]) + [v * mass / total for v in resized]


def ref_merge(per_head, tau):
    """AttnDistill (c): a_j = (1/T) sum_h log a_j^h, softmax over j."""
    length = len(per_head[0])
    logits = [sum(math.log(head[j]) for head in per_head) / tau
              for j in range(length)]
    top = max(logits)
    exps = [math.exp(v - top) for v in logits]
    return [e / sum(exps) for e in exps]


def vit_attention_reference(s, t, heads_s, heads_t, tau=10.0, extra=1,
                            merge=None, weight=1.0):
    att_s = ref_attention(s, heads_s)
    att_t = ref_attention(t, heads_t)
    merge = heads_s != heads_t if merge is None else merge
    side_s = math.isqrt(s.shape[1] - extra)
    total = 0.0
    for n in range(s.shape[0]):
        teacher = att_t[n]
        if s.shape[1] != t.shape[1]:
            teacher = [ref_resize(head, extra, side_s) for head in teacher]
        if merge:
            total += ref_kl(ref_merge(teacher, tau), ref_merge(att_s[n], tau))
        else:
            total += sum(ref_kl(p, q) for p, q in zip(teacher, att_s[n]))
    return weight * total / s.shape[0]


def qkv(n, tokens, heads, head_dim, seed, scale=1.0):
    gen = torch.Generator().manual_seed(seed)
    return scale * torch.randn(
        n, tokens, 3 * heads * head_dim, generator=gen, dtype=torch.float64)


def close(value, ref, rel=1e-6):
    assert abs(value - ref) <= rel * abs(ref), (value, ref)


# ------------------------------------------------------ the three cases
@pytest.mark.parametrize('heads,n', [(1, 2), (3, 2), (6, 1)])
def test_case_a_same_heads_per_head_kl(heads, n):
    s = qkv(n, 17, heads, 4, seed=0)
    t = qkv(n, 17, heads, 4, seed=1, scale=1.5)
    loss = ViTAttentionLoss(heads, heads, loss_weight=0.7)(s, t)
    assert loss.dtype == torch.float64 and loss.dim() == 0
    close(loss.item(), vit_attention_reference(s, t, heads, heads,
                                               weight=0.7))


@pytest.mark.parametrize('side_s,side_t', [(4, 8), (6, 3), (4, 7)])
def test_case_b_same_heads_resized_teacher(side_s, side_t):
    # ViT-S/16 student of a ViT-S/8 teacher: 4 x 4 vs 8 x 8 patches here
    s = qkv(2, 1 + side_s**2, 3, 4, seed=2)
    t = qkv(2, 1 + side_t**2, 3, 4, seed=3, scale=2.0)
    loss = ViTAttentionLoss(3, 3, loss_weight=0.1)(s, t)
    close(loss.item(), vit_attention_reference(s, t, 3, 3, weight=0.1))


@pytest.mark.parametrize('heads_s,heads_t,tau', [(3, 6, 10.0), (6, 12, 1.0),
                                                 (2, 1, 20.0)])
def test_case_c_merged_heads(heads_s, heads_t, tau):
    # DeiT-tiny (3 heads) of DeiT-small (6 heads): 192 vs 384 channels
    s = qkv(2, 17, heads_s, 8, seed=4, scale=2.0)
    t = qkv(2, 17, heads_t, 8, seed=5, scale=2.0)
    loss = ViTAttentionLoss(heads_s, heads_t, tau=tau, loss_weight=0.1)
    value = loss(s, t)
    close(value.item(),
          vit_attention_reference(s, t, heads_s, heads_t, tau, weight=0.1))
    assert loss.merge_heads


def test_heads_and_patches_both_differ_resizes_then_merges():
    s = qkv(2, 1 + 4**2, 3, 4, seed=6, scale=2.0)
    t = qkv(2, 1 + 8**2, 6, 4, seed=7, scale=2.0)
    value = ViTAttentionLoss(3, 6, tau=2.0)(s, t).item()
    close(value, vit_attention_reference(s, t, 3, 6, tau=2.0))


def test_merge_can_be_forced_with_equal_heads():
    s = qkv(2, 10, 3, 4, seed=8, scale=2.0)
    t = qkv(2, 10, 3, 4, seed=9, scale=2.0)
    forced = ViTAttentionLoss(3, 3, tau=4.0, merge_heads=True)(s, t).item()
    close(forced, vit_attention_reference(s, t, 3, 3, 4.0, merge=True))
    per_head = ViTAttentionLoss(3, 3)(s, t).item()
    assert abs(forced - per_head) > 1e-6


def test_distilled_deit_two_extra_tokens_are_kept_in_resizing():
    # class and distillation token, then 4 x 4 / 6 x 6 patches
    s = qkv(1, 2 + 16, 3, 4, seed=10)
    t = qkv(1, 2 + 36, 3, 4, seed=11, scale=2.0)
    value = ViTAttentionLoss(3, 3, num_extra_tokens=2)(s, t).item()
    close(value, vit_attention_reference(s, t, 3, 3, extra=2))


def test_distilled_deit_teacher_plain_vit_student():
    # teacher: class + distillation token + 6 x 6 patches; student: class
    # token + 4 x 4 patches. The teacher's distillation-token entry is
    # dropped and its attention renormalised, then resized as in case (b).
    s = qkv(2, 1 + 16, 3, 4, seed=20)
    t = qkv(2, 2 + 36, 3, 4, seed=21, scale=2.0)
    value = ViTAttentionLoss(3, 3, num_extra_tokens=(1, 2))(s, t).item()
    att_s, att_t = ref_attention(s, 3), ref_attention(t, 3)
    total = 0.0
    for n in range(2):
        for p_s, p_t in zip(att_s[n], att_t[n]):
            kept = [p_t[0]] + p_t[2:]
            kept = [v / sum(kept) for v in kept]
            total += ref_kl(ref_resize(kept, 1, 4), p_s)
    close(value, total / 2)
    with pytest.raises(ValueError, match='no attention to compare'):
        ViTAttentionLoss(3, 3, num_extra_tokens=(2, 1))


# -------------------------------------------------------------- properties
def test_zero_when_student_attention_equals_teacher():
    t = qkv(2, 17, 3, 8, seed=12)
    assert ViTAttentionLoss(3, 3)(t.clone(), t).item() == pytest.approx(
        0, abs=1e-14)
    # values do not enter: other v, same q and k give the same attention
    s = t.clone()
    s[..., 2 * 24:] = torch.randn(2, 17, 24, dtype=torch.float64)
    assert ViTAttentionLoss(3, 3)(s, t).item() == pytest.approx(0, abs=1e-14)
    # merged heads: a permutation of the student's heads changes nothing
    t6 = qkv(2, 17, 6, 4, seed=13)
    s3 = qkv(2, 17, 3, 4, seed=14)
    perm = s3.reshape(2, 17, 3, 3, 4)[:, :, :, [2, 0, 1]].reshape(2, 17, -1)
    loss = ViTAttentionLoss(3, 6, tau=5.0)
    assert loss(perm, t6).item() == pytest.approx(loss(s3, t6).item(),
                                                  rel=1e-12)
    merged = ViTAttentionLoss(6, 6, merge_heads=True)
    assert merged(t6.clone(), t6).item() == pytest.approx(0, abs=1e-14)


def test_kl_is_nonnegative_and_direction_is_teacher_to_student():
    for seed in range(5):
        s = qkv(2, 17, 3, 4, seed=100 + seed, scale=3.0)
        t = qkv(2, 17, 3, 4, seed=200 + seed, scale=3.0)
        for loss in (ViTAttentionLoss(3, 3),
                     ViTAttentionLoss(3, 3, merge_heads=True, tau=0.5)):
            assert loss(s, t).item() > 0
        t_big = qkv(2, 65, 3, 4, seed=300 + seed, scale=3.0)
        assert ViTAttentionLoss(3, 3)(s, t_big).item() > 0
    loss = ViTAttentionLoss(3, 3)
    assert abs(loss(s, t).item() - loss(t, s).item()) > 1e-6


def test_large_temperature_flattens_merged_heads():
    s = qkv(2, 17, 3, 4, seed=15, scale=2.0)
    t = qkv(2, 17, 6, 4, seed=16, scale=2.0)
    values = [ViTAttentionLoss(3, 6, tau=tau)(s, t).item()
              for tau in (1.0, 10.0, 1e4)]
    assert values[0] > values[1] > values[2] >= 0
    assert values[2] < 1e-6


def test_resize_keeps_class_entry_and_sums_to_one():
    torch.manual_seed(17)
    attention = torch.softmax(3 * torch.randn(2, 3, 1 + 49,
                                              dtype=torch.float64), -1)
    for side in (4, 7, 10):
        out = resize_patch_attention(attention, side * side)
        assert out.shape == (2, 3, 1 + side * side)
        assert torch.allclose(out.sum(-1), torch.ones(2, 3,
                                                      dtype=torch.float64))
        assert torch.equal(out[..., 0], attention[..., 0])
        assert (out > 0).all()
    # same size: bicubic is the identity
    assert torch.allclose(resize_patch_attention(attention, 49), attention,
                          atol=1e-12)
    # a lone spike makes bicubic undershoot below 0; the result stays a
    # distribution
    spike = torch.full((1, 1, 1 + 9), 1e-6, dtype=torch.float64)
    spike[..., 5] = 1 - 9e-6
    spike /= spike.sum()
    raw = F.interpolate(spike[..., 1:].reshape(1, 1, 3, 3), size=(8, 8),
                        mode='bicubic', align_corners=False)
    assert (raw < 0).any()
    out = resize_patch_attention(spike, 64)
    assert (out > 0).all() and out.sum().item() == pytest.approx(1.0)
    # distilled DeiT: both leading entries are kept
    two = torch.softmax(torch.randn(1, 2, 2 + 16, dtype=torch.float64), -1)
    out = resize_patch_attention(two, 64, num_extra_tokens=2)
    assert torch.equal(out[..., :2], two[..., :2])
    assert torch.allclose(out.sum(-1), torch.ones(1, 2, dtype=torch.float64))


def test_gradient_to_student_not_teacher():
    for heads_t, tokens_t in ((3, 17), (6, 17), (3, 65)):
        s = qkv(2, 17, 3, 4, seed=18).requires_grad_()
        t = qkv(2, tokens_t, heads_t, 4, seed=19).requires_grad_()
        ViTAttentionLoss(3, heads_t)(s, t).backward()
        assert t.grad is None
        grad = s.grad.reshape(2, 17, 3, 12)
        # only the class token's query and the keys carry gradient
        assert grad[:, 0, 0].abs().sum() > 0
        assert grad[:, :, 1].abs().sum() > 0
        assert grad[:, 1:, 0].abs().sum() == 0 and grad[:, :, 2].abs().sum() \
            == 0


def test_batch_one_and_divided_by_batch():
    s = qkv(1, 17, 3, 4, seed=20)
    t = qkv(1, 17, 6, 4, seed=21)
    loss = ViTAttentionLoss(3, 6)
    one = loss(s, t)
    close(one.item(), vit_attention_reference(s, t, 3, 6))
    assert torch.allclose(loss(s.repeat(3, 1, 1), t.repeat(3, 1, 1)), one,
                          rtol=1e-12)


def test_half_precision_gives_float32():
    s = qkv(2, 17, 3, 8, seed=22).half()
    t = qkv(2, 17, 6, 8, seed=23).bfloat16()
    value = ViTAttentionLoss(3, 6)(s, t)
    assert value.dtype == torch.float32 and torch.isfinite(value)
    ref = vit_attention_reference(s.double(), t.double(), 3, 6)
    assert value.item() == pytest.approx(ref, rel=1e-4, abs=1e-7)


def test_saturated_attention_stays_finite():
    # class queries far larger than the keys: one-hot attention in float32,
    # exp() underflows to 0 for most keys
    for heads_t, tokens_t in ((3, 17), (3, 65), (6, 17)):
        s = qkv(2, 17, 3, 4, seed=24, scale=30.0).float().requires_grad_()
        t = qkv(2, tokens_t, heads_t, 4, seed=25, scale=30.0).float()
        value = ViTAttentionLoss(3, heads_t, tau=1.0)(s, t)
        value.backward()
        assert torch.isfinite(value) and value > 0
        assert torch.isfinite(s.grad).all()


# ------------------------------------------------------------------ errors
def test_clear_errors():
    s = qkv(2, 17, 3, 4, seed=26)
    with pytest.raises(ValueError, match='multiple of 3 x 5 heads'):
        ViTAttentionLoss(5, 3)(s, s)
    with pytest.raises(ValueError, match=r'qkv projection.*\(2, 17\)'):
        ViTAttentionLoss(3, 3)(s[..., 0], s)
    with pytest.raises(ValueError, match='batch of 2.*batch of 1'):
        ViTAttentionLoss(3, 3)(s, s[:1])
    with pytest.raises(ValueError, match='merge_heads=None'):
        ViTAttentionLoss(3, 6, merge_heads=False)
    with pytest.raises(ValueError, match='tau > 0'):
        ViTAttentionLoss(3, 6, tau=0)
    with pytest.raises(ValueError, match='student_heads >= 1'):
        ViTAttentionLoss(0, 6)
    with pytest.raises(ValueError, match='interpolation'):
        ViTAttentionLoss(3, 3, interpolation='cubic')
    # 18 teacher tokens: 17 patches, no square grid (a distilled DeiT
    # teacher with num_extra_tokens left at 1)
    with pytest.raises(ValueError, match='not a square grid.*num_extra'):
        ViTAttentionLoss(3, 3)(s, qkv(2, 18, 3, 4, seed=27))


def test_registry_build():
    loss = MODELS.build(dict(type='ViTAttentionLoss', student_heads=3,
                             teacher_heads=6, tau=10.0, loss_weight=0.1))
    assert isinstance(loss, ViTAttentionLoss)
    assert loss.merge_heads and loss.tau == 10.0 and loss.loss_weight == 0.1


# ------------------------------------- the attention the models really use
def test_class_attention_equals_torch_multihead_attention_weights():
    """Same qkv layout as torch's nn.MultiheadAttention (in_proj rows: q, k,
    v; heads contiguous), which returns its attention weights."""
    torch.manual_seed(28)
    mha = nn.MultiheadAttention(24, 3, batch_first=True).double().eval()
    x = torch.randn(2, 10, 24, dtype=torch.float64)
    _, weights = mha(x, x, x, need_weights=True, average_attn_weights=False)
    projected = F.linear(x, mha.in_proj_weight, mha.in_proj_bias)
    assert torch.allclose(class_attention(projected, 3), weights[:, :, 0],
                          rtol=1e-10, atol=1e-12)


def _mmpretrain_models():
    try:
        import mmpretrain.models  # noqa: F401
    except ImportError as err:  # torchvision missing (mmpretrain needs it)
        pytest.skip(f'mmpretrain.models cannot be imported here: {err!r}')
    return mmpretrain.models


def _attention_output_from_qkv(qkv_out, heads, proj):
    """Class-token row of the attention output rebuilt from the recomputed
    attention and the values: proj(sum_j a_hj v_hj)."""
    n, length, width = qkv_out.shape
    c = width // 3
    attention = class_attention(qkv_out, heads)  # (N, H, L)
    values = qkv_out[..., 2 * c:].reshape(n, length, heads, c // heads)
    mixed = torch.einsum('nhl,nlhd->nhd', attention, values).reshape(n, c)
    return proj(mixed)


@pytest.mark.parametrize('distilled', [False, True])
def test_recomputed_attention_matches_mmpretrain_vit(distilled):
    """Tap the last block's qkv of a real mmpretrain (Distilled)
    VisionTransformer, recompute the class-token attention, rebuild the
    attention module's class-token output and compare with the module's own
    output (scaled_dot_product_attention inside)."""
    models = _mmpretrain_models()
    cls = (models.DistilledVisionTransformer
           if distilled else models.VisionTransformer)
    torch.manual_seed(29)
    vit = cls(arch=dict(embed_dims=48, num_layers=2, num_heads=3,
                        feedforward_channels=96),
              img_size=64, patch_size=16).double()
    vit.eval()  # mmpretrain backbones' train() returns None
    attn = vit.layers[-1].attn
    seen = {}
    hooks = [
        attn.qkv.register_forward_hook(
            lambda m, i, o: seen.__setitem__('qkv', o)),
        attn.register_forward_hook(
            lambda m, i, o: seen.__setitem__('out', o)),
    ]
    with torch.no_grad():
        vit(torch.randn(2, 3, 64, 64, dtype=torch.float64))
    for hook in hooks:
        hook.remove()
    assert seen['qkv'].shape == (2, 16 + vit.num_extra_tokens, 3 * 48)
    rebuilt = _attention_output_from_qkv(seen['qkv'], attn.num_heads,
                                         attn.proj)
    assert torch.allclose(rebuilt, seen['out'][:, 0], rtol=1e-9, atol=1e-12)
    # a wrong head count gives another attention: the check has teeth
    wrong = _attention_output_from_qkv(seen['qkv'], 6, attn.proj)
    assert not torch.allclose(wrong, seen['out'][:, 0], atol=1e-6)


def test_shipped_config_names_the_heads_and_widths_of_its_models():
    """The heads given to the loss and the projector's widths are those of
    the layers the config taps, which are the last blocks."""
    models = _mmpretrain_models()
    from mmengine.config import Config
    from mmengine.registry import MODELS as ROOT_MODELS
    from mmengine.registry import DefaultScope

    from mmdistill.utils.config import load_config
    cfg = Config.fromfile(CONFIG)
    distill = cfg.model.distill
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        student = ROOT_MODELS.build(cfg.model.student.backbone)
        teacher = ROOT_MODELS.build(
            load_config(cfg.model.teacher.config).model.backbone)
    assert isinstance(student, models.VisionTransformer)
    names = dict(student.named_modules()), dict(teacher.named_modules())
    attention = distill.class_attention
    loss = attention.loss
    for model, tap, heads in ((names[0], attention.student,
                               loss.student_heads),
                              (names[1], attention.teacher,
                               loss.teacher_heads)):
        assert tap == f'backbone.layers.{len(model["layers"]) - 1}.attn.qkv'
        assert model[tap[len('backbone.'):-len('.qkv')]].num_heads == heads
    token = distill.class_token
    assert token.connector.in_channels == student.embed_dims
    assert token.connector.out_channels == teacher.embed_dims
    assert token.student == f'backbone.layers.{len(student.layers) - 1}'


def test_head_counts_are_checked_against_the_tapped_layers():
    """A head count that divides the width but is not the tapped layer's
    would give another loss without a word: stopped at build, naming the
    argument, the layer and the fix."""
    _mmpretrain_models()
    from mmengine.registry import MODELS as ROOT_MODELS
    from mmengine.registry import DefaultScope
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        student = ROOT_MODELS.build(dict(
            type='VisionTransformer', arch=dict(
                embed_dims=48, num_layers=2, num_heads=3,
                feedforward_channels=96), img_size=32, patch_size=16))
        teacher = ROOT_MODELS.build(dict(
            type='VisionTransformer', arch=dict(
                embed_dims=96, num_layers=2, num_heads=6,
                feedforward_channels=192), img_size=32, patch_size=16))
    tap = 'layers.1.attn.qkv'
    assert ViTAttentionLoss(3, 6).tap_problems(student, tap, teacher,
                                               tap) == []
    assert ViTAttentionLoss(6, 3).tap_problems(student, tap, teacher,
                                               tap) == [
        "student_heads=6, but the tapped layer 'layers.1.attn' has "
        'num_heads=3: set student_heads=3.',
        "teacher_heads=3, but the tapped layer 'layers.1.attn' has "
        'num_heads=6: set teacher_heads=6.']
    # a layer that does not say its heads: nothing to check
    assert ViTAttentionLoss(6, 3).tap_problems(student, 'layers.1.ffn',
                                               teacher, 'layers') == []
