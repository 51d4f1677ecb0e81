"""Target-aware Transformer connector (TaT).

Paper: "Knowledge Distillation via the Target-aware Transformer", Sihao Lin,
Hongwei Xie, Bing Wang, Kaicheng Yu, Xiaojun Chang, Xiaodan Liang and Gang
Wang, CVPR 2022 (arXiv:2205.10793). Section 3: the one-to-all TaT with its
parametric embeddings, ``f^s' = softmax(theta(f^s)^T gamma(f^t)) phi(f^s)``
(no ``1/sqrt(d)`` scaling) matched to ``f^t`` with the mean squared error,
and the hierarchical distillation of segmentation: patch-group distillation
(attention inside groups of stacked patches) and anchor-point distillation
(attention over average-pooled anchors).

Where the ``L x L`` attention matrix (the "TaT map") is larger than the
queries (global attention over a large map), the attention runs through
``torch.nn.functional.scaled_dot_product_attention`` with ``scale=1.0``
(fused flash / memory-efficient kernels on a GPU, which never hold the
matrix), and the matrix is only formed when it is asked for, see
``keep_attention``. Where it is no larger (patch groups: 32 positions of
8192 channels in the paper's setting; anchors), the matrix is formed
explicitly, which keeps less for the backward.
"""
import contextlib
from typing import List, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from mmcv.cnn import ConvModule
from mmengine.model import BaseModule
from mmengine.utils import digit_version
from torch import nn
from torch.autograd.function import once_differentiable

from mmdistill.registry import MODELS
from mmdistill.utils.tensor import (autocast_dtype,
                                    gradients_in_place_allowed, upcast)
from mmdistill.utils.warn import warn

_MODES = ('global', 'patch_group', 'anchor')
_ANCHOR_OUTPUTS = ('upsample', 'anchor')
# ``scaled_dot_product_attention(..., scale=...)`` exists from torch 2.1 on;
# before, the attention is computed explicitly (same values).
_SDPA_HAS_SCALE = digit_version(torch.__version__) >= digit_version('2.1.0')


def _attention_matrix(q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """``softmax(q k^T)`` over the last axis, no ``1/sqrt(d)`` scaling."""
    return torch.matmul(q, k.transpose(-1, -2)).softmax(dim=-1)


def _pair(value: Union[int, Sequence[int]], name: str) -> Tuple[int, int]:
    """Turn ``value`` into a pair of positive ints."""
    if isinstance(value, int):
        value = (value, value)
    value = tuple(int(v) for v in value)
    if len(value) != 2 or min(value) < 1:
        raise ValueError(f'{name} must be a positive int or a pair of '
                         f'positive ints, got {value}')
    return value


def _patch_starts(size: int, num: int) -> Tuple[int, List[int]]:
    """Patch length and start offsets that tile ``size`` with ``num`` patches.

    The patch length is ``ceil(size / num)``; the starts are spread evenly
    from 0 to ``size - length`` (``floor(i * (size - length) / (num - 1))``),
    so the patches cover every row (column) and are all the same size. When
    ``num`` divides ``size`` this is the plain non-overlapping split
    ``start_i = i * size / num``; otherwise neighbouring patches overlap by
    at most one row (column) each.

    Args:
        size (int): Height or width of the feature map.
        num (int): Number of patches along that axis.

    Returns:
        tuple[int, list[int]]: The patch length and the ``num`` starts.
    """
    length = -(-size // num)
    if num == 1:
        return length, [0]
    return length, [(i * (size - length)) // (num - 1) for i in range(num)]


def _patch_positions(size: int, num: int,
                     device: torch.device) -> Tuple[int, torch.Tensor]:
    """The rows (columns) of each patch, ``(num, length)``, as
    :func:`_patch_starts` places them, computed on ``device`` (no copy of
    host data to the device)."""
    length = -(-size // num)
    index = torch.arange(num, device=device)
    starts = index * (size - length) // max(num - 1, 1)
    return length, starts[:, None] + torch.arange(length, device=device)


def _window_upsample_matrix(size: int, out: int, dtype: torch.dtype,
                            device: torch.device) -> torch.Tensor:
    """Transpose-like map from ``out`` adaptive-pool cells back to ``size``.

    Cell ``a`` of ``F.adaptive_avg_pool2d`` covers ``[floor(a * size / out),
    ceil((a + 1) * size / out))``. Row ``i`` of the returned ``(size, out)``
    matrix spreads weight ``1 / (number of cells covering i)`` over the cells
    covering position ``i``: nearest-neighbour upsampling when ``out``
    divides ``size``, the mean of the (at most two) covering cells otherwise.
    """
    cell = torch.arange(out, device=device)
    start = cell * size // out
    end = -(-(cell + 1) * size // out)
    pos = torch.arange(size, device=device)[:, None]
    mat = ((pos >= start) & (pos < end)).to(dtype)
    return mat / mat.sum(dim=1, keepdim=True)


class _CellMean(torch.autograd.Function):
    """The mean over each of the equal ``gh x gw`` cells of an ``(N, C, H,
    W)`` map (``F.adaptive_avg_pool2d`` when the grid divides the map),
    keeping nothing of the map. Its backward spreads the gradient into a
    new map that is a tensor of its own (mean-then-reshape's is a view of
    the spread gradient), which autograd can add the gradient of another
    use of the map to in place (see :class:`_Tokens`)."""

    @staticmethod
    def forward(ctx, x, grid):
        n, c, h, w = x.shape
        ctx.shape = x.shape
        ctx.split = (n, c, grid[0], h // grid[0], grid[1], w // grid[1])
        return x.reshape(ctx.split).mean(dim=(3, 5))

    @staticmethod
    def backward(ctx, grad):
        # plain ops: differentiable again (create_graph)
        split = ctx.split
        share = grad / (split[3] * split[5])  # small: one value per cell
        out = grad.new_empty(ctx.shape)
        out.view(split).copy_(share[:, :, :, None, :, None].expand(split))
        return out, None


def _pool_to(x: torch.Tensor, grid: Tuple[int, int]) -> torch.Tensor:
    """``F.adaptive_avg_pool2d(x, grid)``; when the grid splits the map into
    equal cells, :class:`_CellMean`, whose backward keeps no copy of ``x``
    (the adaptive pool's keeps ``x`` until the backward: a full-size map per
    pooled tensor) and makes one full-size gradient."""
    h, w = x.shape[-2:]
    if h % grid[0] or w % grid[1]:
        return F.adaptive_avg_pool2d(x, grid)
    return _CellMean.apply(x, grid)


class _GroupLayout:
    """Between ``(N, C, n, ph, m, pw)`` patches (``n x m`` patches of ``ph x
    pw`` positions) and patch-group tokens ``(N, G, ph*pw, P*C)``: ``G``
    groups of ``P`` consecutive patches (row-major), a token's feature the
    concatenation of its ``P`` patches' features at that position
    (patch-major).

    When a group lies within a row of patches (``P`` divides ``m``) or is
    whole rows (``m`` divides ``P``), each direction is a single copy
    through one permutation of a view; otherwise patches are first put in
    row-major order (two copies).
    """

    def __init__(self, n: int, c: int, grid_h: int, ph: int, grid_w: int,
                 pw: int, groups: int) -> None:
        per_group = grid_h * grid_w // groups
        self.patch_shape = (n, c, grid_h, ph, grid_w, pw)
        self.token_shape = (n, groups, ph * pw, per_group * c)
        if grid_w % per_group == 0:  # (n, c, n, ph, m/P, P, pw)
            self.split = (n, c, grid_h, ph, grid_w // per_group, per_group,
                          pw)
            self.order = (0, 2, 4, 3, 6, 5, 1)
        elif per_group % grid_w == 0:  # (n, c, G, P/m, ph, m, pw)
            rows = per_group // grid_w
            self.split = (n, c, grid_h // rows, rows, ph, grid_w, pw)
            self.order = (0, 2, 4, 6, 3, 5, 1)
        else:
            self.split = self.order = None

    def tokens(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, C, n, ph, m, pw)`` -> ``(N, G, ph*pw, P*C)``, contiguous,
        always a new tensor (never a view of ``x``)."""
        if self.order is None:
            n, c, grid_h, ph, grid_w, pw = self.patch_shape
            out = x.permute(0, 2, 4, 1, 3, 5).reshape(
                n, self.token_shape[1], -1, ph * pw)
            out = out.transpose(-1, -2).contiguous()
        else:
            out = x.reshape(self.split).permute(self.order).reshape(
                self.token_shape)
        if out.untyped_storage().data_ptr() == \
                x.untyped_storage().data_ptr():
            out = out.clone()  # e.g. one channel: the order is unchanged
        return out

    def token_view(self, x: torch.Tensor) -> torch.Tensor:
        """A view of an ``(N, C, H, W)`` (or ``(N, C, n, ph, m, pw)``)
        contiguous map in token order: groups along dims 1 (and 2), the
        ``ph*pw`` positions next, then the ``P*C`` features; dim 1 indexes
        runs of ``G / shape[1]`` consecutive groups. Only for layouts with
        one permutation (``order`` is not None)."""
        return x.reshape(self.split).permute(self.order)

    def patches(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, G, ph*pw, P*C)`` -> ``(N, C, n, ph, m, pw)``, contiguous."""
        if self.order is None:
            n, c, grid_h, ph, grid_w, pw = self.patch_shape
            x = x.transpose(-1, -2).reshape(n, grid_h, grid_w, c, ph, pw)
            return x.permute(0, 3, 1, 4, 2, 5).contiguous()
        permuted = [self.split[i] for i in self.order]
        inverse = [self.order.index(i) for i in range(len(self.order))]
        return x.reshape(permuted).permute(inverse).reshape(self.patch_shape)


class _Tokens(torch.autograd.Function):
    """:meth:`_GroupLayout.tokens` of an ``(N, C, H, W)`` map (a layout with
    one permutation) whose backward writes the gradient straight into a
    new map of that shape: one copy and a tensor of its own, which
    autograd can add another gradient of the map to in place (the view that
    reshaping the tokens back gives cannot be)."""

    @staticmethod
    def forward(ctx, x, layout):
        ctx.layout, ctx.shape = layout, x.shape
        return layout.tokens(x.reshape(layout.patch_shape))

    @staticmethod
    def backward(ctx, grad):
        # plain ops: differentiable again (create_graph)
        layout = ctx.layout
        out = grad.new_empty(ctx.shape)
        view = layout.token_view(out)
        view.copy_(grad.view(view.shape))
        return out, None


def _chunks(layout: '_GroupLayout', parts: int = 8):
    """``(sample, token-view slice, group slice)`` of about ``1 / parts`` of
    the whole batch's groups each: consecutive groups of one sample, a
    contiguous block of the ``(N, G, L, D)`` tokens (no copy to multiply
    it), and runs of them along dim 1 of :meth:`_GroupLayout.token_view`."""
    samples = layout.patch_shape[0]
    rows = layout.split[layout.order[1]]
    per_row = layout.token_shape[1] // rows
    step = max(1, rows * samples // parts)
    for sample in range(samples):
        for start in range(0, rows, step):
            end = min(start + step, rows)
            yield (sample, slice(start, end),
                   slice(start * per_row, end * per_row))


def _matmul_into(out: torch.Tensor, a: torch.Tensor, b: torch.Tensor,
                 amp: bool) -> None:
    """``out[...] = a @ b``; straight into ``out`` (a contiguous block of
    the inputs' dtype) without autocast; under autocast, computed in its
    dtype, then copied."""
    if amp:
        out.copy_(torch.matmul(a, b))
    else:
        torch.matmul(a, b, out=out)


class _GroupAttention(torch.autograd.Function):
    """``softmax(q k^T) v`` inside each patch group, written straight into
    the ``(N, C, H, W)`` map, a slice of groups at a time.

    The same values and gradients as the explicit attention followed by
    :meth:`_GroupLayout.patches`, with less held at once: the output is
    never also held in token order, and the backward takes the output's
    gradient in the map's layout a slice of groups at a time. Within
    :func:`mmdistill.utils.tensor.gradients_in_place` (a distillation
    pair), it writes the gradients of the queries, keys and values over the
    token tensors it saved (which the caller made for this attention
    alone), instead of three new ones beside them; its backward then runs
    once per forward.

    Its output is held by nothing of its own (``private_output``): a loss
    may turn it into its gradient in place (see
    :func:`mmdistill.losses.functional.mean_squared_error`).
    """

    private_output = True

    @staticmethod
    def forward(ctx, q, k, v, layout, kept):
        attn = _attention_matrix(q, k)  # (N, G, L, L), small: L <= D
        if kept is not None:
            kept.append(attn.detach())
        n, c, grid_h, ph, grid_w, pw = layout.patch_shape
        out = view = None
        for i, rows, groups in _chunks(layout):
            part = torch.matmul(attn[i, groups], v[i, groups])
            if out is None:  # autocast's dtype, if on
                out = part.new_empty(n, c, grid_h * ph, grid_w * pw)
                view = layout.token_view(out)
            view[i, rows].copy_(part.reshape(view[i, rows].shape))
        ctx.layout, ctx.done = layout, False
        ctx.in_place = gradients_in_place_allowed()
        ctx.amp = (q.device.type, autocast_dtype(q.device.type))
        ctx.save_for_backward(q, k, v, attn)
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        if ctx.done:
            raise RuntimeError(
                'TaTConnector(patch_group): its backward ran twice '
                '(retain_graph) inside gradients_in_place(), where it writes '
                'the gradients over the tensors it saved; run it outside '
                'that context to backpropagate twice.')
        ctx.done = ctx.in_place
        q, k, v, attn = ctx.saved_tensors
        layout = ctx.layout
        view = layout.token_view(grad.reshape(layout.patch_shape))
        need_k = ctx.needs_input_grad[1]
        if ctx.in_place:
            d_q, d_k, d_v = q, k if need_k else None, v
        else:
            d_q, d_v = torch.empty_like(q), torch.empty_like(v)
            d_k = torch.empty_like(k) if need_k else None
        device_type, amp = ctx.amp
        mirror = torch.autocast(device_type, dtype=amp) if amp else \
            contextlib.nullcontext()
        with mirror:
            for i, rows, groups in _chunks(layout):
                # at most two slices of the map's size alive at once; in
                # place, each slice is read before it is written over
                d_out = view[i, rows].reshape(-1, *v.shape[2:]).to(v.dtype)
                a = attn[i, groups]
                qg, kg, vg = q[i, groups], k[i, groups], v[i, groups]
                d_a = torch.matmul(d_out, vg.transpose(-1, -2))
                _matmul_into(d_v[i, groups], a.transpose(-1, -2), d_out,
                             amp is not None)
                del d_out
                d_s = a * (d_a - (d_a * a).sum(dim=-1, keepdim=True))
                d_kg = torch.matmul(d_s.transpose(-1, -2), qg) \
                    if need_k else None
                _matmul_into(d_q[i, groups], d_s, kg, amp is not None)
                if need_k:
                    d_k[i, groups] = d_kg
                del d_kg
        return d_q, d_k, d_v, None, None


class _ConvRecompute:
    """What a norm layer's backward keeps of a 1x1 conv's output under
    ``with_cp``: the conv's input (held by the conv's own backward anyway)
    and the conv, to compute the output again when the backward needs it."""

    def __init__(self, conv: nn.Module, x: torch.Tensor,
                 dtype: torch.dtype) -> None:
        self.conv, self.x, self.version = conv, x, x._version
        self.dtype = dtype

    def __call__(self) -> torch.Tensor:
        if self.x._version != self.version:
            raise RuntimeError(
                'TaTConnector(with_cp=True): a tapped feature was changed in '
                'place after the connector used it, so its embedding cannot '
                'be computed again for the backward; tap a layer whose output '
                'is not modified in place, or set with_cp=False.')
        conv = self.conv
        # the forward's precision (under autocast: its dtype, which the
        # backward does not run under)
        with torch.no_grad():
            x, weight = self.x.to(self.dtype), conv.weight.to(self.dtype)
            bias = None if conv.bias is None else conv.bias.to(self.dtype)
            if not (x.device.type == 'cpu' and weight.shape[2:] == (1, 1)
                    and conv.groups == 1 and tuple(conv.stride) == (1, 1)
                    and tuple(conv.padding) == (0, 0)
                    and x.is_contiguous()):
                # on a GPU, the forward's own conv (cuDNN may compute in
                # TF32 where a matrix product would not: the same values)
                return F.conv2d(x, weight, bias, conv.stride, conv.padding,
                                conv.dilation, conv.groups)
            # on the CPU, a 1x1 conv as one matrix product per sample,
            # written straight into the output (the CPU conv also copies its
            # input into a layout of its own first)
            n, c, h, w = x.shape
            out = x.new_empty(n, weight.shape[0], h, w)
            kernel = weight.reshape(weight.shape[0], c)
            for i in range(n):
                torch.mm(kernel, x[i].view(c, h * w),
                         out=out[i].view(-1, h * w))
            if bias is not None:
                out += bias.reshape(1, -1, 1, 1)
            return out


def _norm_in_place_ok(norm: nn.Module, x: torch.Tensor) -> bool:
    """Whether :class:`_BatchNormRecomputed` computes what ``norm`` does:
    a batch norm on this process's batch statistics (training, or no
    running statistics; a ``SyncBatchNorm`` only outside a multi-process
    group), in float32 or float64 without autocast."""
    kind = next((k for k in (nn.BatchNorm2d, nn.SyncBatchNorm)
                 if isinstance(norm, k)), None)
    if kind is None or type(norm).forward is not kind.forward:
        return False  # e.g. a norm layer with a forward of its own
    if not (norm.training or not norm.track_running_stats):
        return False
    if isinstance(norm, nn.SyncBatchNorm) and \
            torch.distributed.is_available() and \
            torch.distributed.is_initialized() and \
            torch.distributed.get_world_size(norm.process_group) > 1:
        return False
    return x.dtype in (torch.float32, torch.float64) and \
        autocast_dtype(x.device.type) is None


class _BatchNormRecomputed(torch.autograd.Function):
    """A batch norm (on the batch's statistics) of a 1x1 conv's output
    that it does not keep: the backward computes the conv's output again
    and works in that tensor in place (normalised input, then its
    gradient), so the norm's backward holds one full-size map besides the
    incoming gradient, where torch's holds two (the input and a new
    gradient). The forward is the module's own (running statistics
    updated as usual).

    ``dx = weight * invstd * (dy - mean(dy) - xhat * mean(dy * xhat))``,
    ``dweight = sum(dy * xhat)``, ``dbias = sum(dy)`` per channel.
    """

    @staticmethod
    def forward(ctx, x, weight, bias, norm, recompute):
        ctx.eps, ctx.recompute = norm.eps, recompute
        ctx.save_for_backward(weight)
        return norm(x)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        (weight, ) = ctx.saved_tensors
        x = ctx.recompute()  # a new tensor, this function's own
        channels = x.shape[1]
        # the batch's statistics, from the same values as the forward's
        # (once per step, not in each forward a with_cp pair runs)
        var, mean = torch.var_mean(x, dim=(0, 2, 3), unbiased=False)
        invstd = torch.rsqrt(var + ctx.eps)

        def per_channel(t):
            return t.reshape(1, channels, 1, 1)

        x.sub_(per_channel(mean)).mul_(per_channel(invstd))  # xhat
        count = x.numel() // channels
        sum_dy = grad.sum(dim=(0, 2, 3))
        step = max(1, channels // 8)  # no full-size product map
        sum_dy_xhat = torch.cat([
            (grad[:, c:c + step] * x[:, c:c + step]).sum(dim=(0, 2, 3))
            for c in range(0, channels, step)
        ])
        scale = invstd if weight is None else weight * invstd
        x.mul_(per_channel(sum_dy_xhat / -count)).add_(grad)
        x.sub_(per_channel(sum_dy / count)).mul_(per_channel(scale))
        return (x, None if weight is None else sum_dy_xhat,
                None if not ctx.needs_input_grad[2] else sum_dy, None, None)


def _embed_recomputed(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``module(x)`` for a conv + norm ``ConvModule``, with the conv's output
    not kept for the norm's backward but computed again from ``x`` then (one
    more 1x1 conv per embedding in the backward, a full-size map less held
    from the forward to the backward). A batch norm on the batch's
    statistics also runs its backward in that recomputed map
    (:class:`_BatchNormRecomputed`): one map less in the backward too."""
    out = module.conv(x)
    # autograd keeps the hooks as long as what they packed: they must not
    # refer to ``out`` itself, or it would stay alive after all
    recompute = _ConvRecompute(module.conv, x, out.dtype)
    norm = module.norm
    if _norm_in_place_ok(norm, out):
        return _BatchNormRecomputed.apply(out, norm.weight, norm.bias, norm,
                                          recompute)
    ptr, shape, dtype = out.data_ptr(), out.shape, out.dtype

    def pack(saved: torch.Tensor):
        if (saved.data_ptr() == ptr and saved.shape == shape
                and saved.dtype == dtype):
            return recompute
        return saved

    def unpack(saved):
        return saved() if isinstance(saved, _ConvRecompute) else saved

    with torch.autograd.graph.saved_tensors_hooks(pack, unpack):
        return module.norm(out)


def _same_data(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Whether ``b`` is ``a`` or a detached alias of it, unchanged since
    (same memory, layout and version; nothing is read from the device)."""
    return a is b or (a.data_ptr() == b.data_ptr() and a.shape == b.shape
                      and a.stride() == b.stride() and a.dtype == b.dtype
                      and a.device == b.device
                      and a._version == b._version)


class _SharedEmbeddings:
    """The embeddings (``theta(S)``, ``phi(S)``, ``gamma(T)``) of one
    forward, handed to the other connectors that share the embedding
    modules, so that a step computes them once (as the reference code does
    for its patch-group and anchor-point losses).

    An entry is reused only for the very same student tensor (identity: its
    autograd history matters) and the same teacher data (the distiller hands
    each pair its own detached alias), and dropped once every sharing
    connector has taken it, so it never outlives the step.
    """

    def __init__(self) -> None:
        self.users = 1
        self._inputs: Optional[Tuple[torch.Tensor, torch.Tensor]] = None
        self._outputs: Optional[Tuple[torch.Tensor, ...]] = None
        self._left = 0
        self._grad = True
        self.warned = False

    def get(self, student: torch.Tensor, teacher: torch.Tensor,
            compute) -> Tuple[torch.Tensor, ...]:
        inputs = self._inputs
        if (self._left and inputs[0] is student
                and _same_data(inputs[1], teacher)
                and torch.is_grad_enabled() == self._grad):
            outputs = self._outputs
            self._left -= 1
            if not self._left:
                self._inputs = self._outputs = None
            return outputs
        outputs = compute()
        if self._left:
            # a later connector got other features than the first: the
            # round is over (nothing kept that no one will take)
            self._inputs = self._outputs = None
            self._left = 0
            if not self.warned:
                self.warned = True
                warn(
                    'TaTConnector: connectors that share embeddings '
                    '(embeddings_from) got different features in one step, '
                    'so the embeddings were computed twice; they should tap '
                    'the same student and teacher layers.')
        elif self.users > 1:
            self._inputs, self._outputs = (student, teacher), outputs
            self._left = self.users - 1
            self._grad = torch.is_grad_enabled()
        return outputs


@MODELS.register_module()
class TaTConnector(BaseModule):
    r"""Target-aware Transformer: reconfigures the student with the teacher.

    With the student feature ``S`` (N, C_s, H, W) and the detached teacher
    feature ``T`` (N, C_t, H, W)::

        q = theta(S),  v = phi(S),  k = gamma(T)        # each (N, C_t, H, W)
        A[i, j] = softmax_j(q_i . k_j)                  # no 1/sqrt(d) scaling
        S'_i = sum_j A[i, j] v_j

    ``theta``, ``phi`` and ``gamma`` are 1x1 conv (no bias) + BN mapping to
    the teacher's channels; ``gamma`` may be the identity
    (``key_embed=False``). ``S'`` is the reconfigured student that the loss
    (mean squared error in the paper) compares with ``T`` (Lin et al., CVPR
    2022, arXiv:2205.10793, Section 3).

    Modes:

    * ``'global'`` (one-to-all): every position attends to all ``H*W``
      positions. ``num_heads`` > 1 splits the channels into heads (the
      channel order is ``head * d + j``), each with its own attention.
    * ``'patch_group'``: the map is cut into an ``n x m`` grid of equal
      patches of ``ph x pw`` positions (``patch_grid=(n, m)``), numbered in
      row-major order. Consecutive patches are stacked along the channels
      into ``num_groups`` groups (``n*m/num_groups`` patches each), so a
      group is a ``ph*pw``-position map whose feature at a position is the
      concatenation of its patches' features there; attention runs inside
      each group over its ``ph*pw`` positions, and ``S'`` is reassembled to
      ``(N, C_t, H, W)``. When ``n`` does not divide ``H`` (or ``m`` does not
      divide ``W``) the patches are ``ceil(H/n)`` rows high and their starts
      are spread evenly from 0 to ``H - ph``, so neighbouring patches overlap
      by at most one row, nothing is dropped or padded, and the output at a
      position covered by two patches is the mean of the two results. A
      warning says so once per connector. (The reference code instead drops
      the remainder rows and columns.)
    * ``'anchor'`` (anchor-point): ``q``, ``k`` and ``v`` are average-pooled
      to an anchor grid (``anchor_size``, ``F.adaptive_avg_pool2d``, clamped
      to the map size), then global attention runs on the anchors. The
      paper's loss compares ``S'`` on the anchor grid with the teacher pooled
      the same way. With ``anchor_output='upsample'`` (default) the connector
      returns ``S'`` spread back to the teacher's ``H x W`` (each position
      takes the value of its anchor cell), so a distiller that computes
      ``MSELoss(connector(S, T), T)`` needs nothing special: when the anchor
      grid divides the map, ``MSE(up(S'), T) = MSE(S', pool(T)) + c`` where
      ``c`` (the mean within-cell variance of ``T``) does not depend on the
      student, so the gradients are exactly those of the paper's anchor loss
      (the logged value is higher by ``c``). With ``anchor_output='anchor'``
      the connector returns ``S'`` on the anchor grid, and the loss must be
      given ``teacher_target(T)`` (= ``pool_teacher(T)``) instead of ``T``.

    The paper's segmentation loss ``beta * patch_group + gamma * anchor`` is
    two distillation pairs on the same layer, one connector per mode.

    The attention map (the "TaT map") of the last forward is
    ``self.last_attention``, detached: ``(N, num_heads, H*W, H*W)`` for
    ``'global'``, ``(N, num_groups, ph*pw, ph*pw)`` for ``'patch_group'`` and
    ``(N, num_heads, a_h*a_w, a_h*a_w)`` for ``'anchor'``; each row sums to
    1. When the map has more entries than the queries (``L > d``, ``L``
    positions of ``d`` channels per head or group: global attention over a
    large map), the forward runs ``scaled_dot_product_attention(q, k, v,
    scale=1.0)``, which on a GPU uses the fused kernels that never form the
    map, and the map is formed only when asked for (``keep_attention``).
    Otherwise (patch groups, anchors) the forward forms the map explicitly,
    ``softmax(q k^T) @ v``: its backward keeps the queries, keys, values and
    the small map, where the fused one keeps the output too and holds all
    the gradients at once (in the paper's segmentation setting at 512x1024,
    about one map of the teacher's size less at the step's peak). Patch
    groups that tile the map (in groups within a row of patches or of whole
    rows) go further: the output is written straight into the map and the
    backward, a slice of groups at a time, writes the gradients over the
    queries, keys and values it kept; with ``MSELoss`` the output's
    gradient is written over the output (see
    ``mmdistill.losses.functional.mean_squared_error``). Then neither the
    output nor any gradient is held beside the queries, keys and values.
    Attention is computed in at least float32 (float64 stays float64; under
    autocast the attention follows autocast) and the output is cast back to
    the student's dtype.

    Args:
        in_channels (int): Channels of the student feature.
        out_channels (int): Channels of the teacher feature.
        mode (str): ``'global'``, ``'patch_group'`` or ``'anchor'``.
            Defaults to ``'global'``.
        key_embed (bool): Whether ``gamma`` (the teacher key) is a 1x1 conv +
            BN; ``False`` uses the teacher feature itself as key. Defaults to
            True.
        num_heads (int): Heads of ``'global'`` and ``'anchor'`` attention;
            must divide ``out_channels``. Defaults to 1 (the paper).
        patch_grid (int | tuple[int, int]): ``(n, m)`` patches along H and W
            for ``'patch_group'``. Defaults to ``(16, 16)`` (the paper's
            Pascal VOC setting; COCOStuff-10k uses 32 x 32).
        num_groups (int, optional): Number of patch groups; must divide
            ``n * m``. ``None`` gives one group per patch. Defaults to 64
            (Pascal VOC; COCOStuff-10k uses 512 with a 32 x 32 grid).
        anchor_size (int | tuple[int, int]): Anchor grid ``(a_h, a_w)`` for
            ``'anchor'``. Defaults to ``(32, 32)`` (both paper settings).
        anchor_output (str): ``'upsample'`` or ``'anchor'``, see above.
            Defaults to ``'upsample'``.
        norm_cfg (dict): Norm layer of the embeddings. Defaults to
            ``dict(type='BN')``.
        keep_attention (bool, optional): What the forward keeps of the
            attention map (``forward(..., keep_attention=...)`` overrides it
            for one call):

            * ``None`` (default), on demand: where the forward runs the
              fused attention, it keeps only references to its (detached)
              queries and keys, the tensors the attention's backward holds
              anyway; ``last_attention`` forms the map from them the first
              time it is read, in that forward's precision. Nothing of the
              size of the map is allocated unless it is read. Where the
              forward forms the (small) map explicitly, it keeps it,
              detached. What is kept is dropped at the start of the next
              forward.
            * ``True``: the forward forms the map explicitly (``softmax(q
              k^T)`` then ``@ v``, the map in memory) and keeps it; for
              analysis tools that read it after every forward.
            * ``False``: nothing is kept, ``last_attention`` is None.
        with_cp (bool): Recompute, in the backward, the outputs of the
            embedding convs that the norm layers' backward needs, instead of
            keeping them from the forward (as mmcv/mmdet's ``with_cp`` trades
            time for memory): one full-size map less held per embedding (3
            with ``key_embed``), for three more 1x1 convs per step. A batch
            norm on the batch's statistics (``BN``, or ``SyncBN`` in one
            process) then also runs its backward in the recomputed map, in
            place: one map less in the backward. Same values. A connector
            with ``embeddings_from`` follows that pair's connector. Defaults
            to False.
        embeddings_from (str, optional): name of another distillation pair
            (same student and teacher taps, a ``TaTConnector`` with the same
            channels) whose embeddings ``theta``, ``phi`` and ``gamma`` this
            connector uses: one set of embedding parameters for both pairs,
            computed once per step, as the reference segmentation code does
            for its patch-group and anchor-point losses. The distiller links
            them when it builds the pairs (:meth:`share_embeddings`). None
            (default): own embeddings.
        init_cfg (dict, optional): mmengine init config.
    """

    def __init__(self,
                 in_channels: int,
                 out_channels: int,
                 mode: str = 'global',
                 key_embed: bool = True,
                 num_heads: int = 1,
                 patch_grid: Union[int, Sequence[int]] = (16, 16),
                 num_groups: Optional[int] = 64,
                 anchor_size: Union[int, Sequence[int]] = (32, 32),
                 anchor_output: str = 'upsample',
                 norm_cfg: dict = dict(type='BN'),
                 keep_attention: Optional[bool] = None,
                 with_cp: bool = False,
                 embeddings_from: Optional[str] = None,
                 init_cfg: Optional[dict] = None) -> None:
        super().__init__(init_cfg=init_cfg)
        if mode not in _MODES:
            raise ValueError(f'mode must be one of {_MODES}, got {mode!r}')
        if anchor_output not in _ANCHOR_OUTPUTS:
            raise ValueError(f'anchor_output must be one of '
                             f'{_ANCHOR_OUTPUTS}, got {anchor_output!r}')
        if num_heads < 1 or out_channels % num_heads:
            raise ValueError(f'num_heads={num_heads} must divide '
                             f'out_channels={out_channels}')
        if keep_attention not in (None, True, False):
            raise ValueError('keep_attention must be None (on demand), True '
                             f'or False, got {keep_attention!r}')
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.mode = mode
        self.num_heads = num_heads
        self.patch_grid = _pair(patch_grid, 'patch_grid')
        num_patches = self.patch_grid[0] * self.patch_grid[1]
        if num_groups is None:
            num_groups = num_patches
        if num_groups < 1 or num_patches % num_groups:
            raise ValueError(
                f'num_groups={num_groups} must divide the number of patches '
                f'{num_patches} of patch_grid={self.patch_grid}')
        self.num_groups = num_groups
        self.anchor_size = _pair(anchor_size, 'anchor_size')
        self.anchor_output = anchor_output
        self.keep_attention = keep_attention
        self.with_cp = bool(with_cp)
        self.embeddings_from = embeddings_from
        self._embeddings = _SharedEmbeddings()
        # the connector whose _embed computes the embeddings (not a
        # submodule: no module attribute, no second copy in state_dict)
        object.__setattr__(self, '_embedder', self)
        self._attention: Optional[torch.Tensor] = None
        # (q, k) of the last forward, for an on-demand map
        self._pending: Optional[Tuple[torch.Tensor, torch.Tensor]] = None
        self._warned = set()

        def embed(channels: int) -> ConvModule:
            return ConvModule(
                channels,
                out_channels,
                kernel_size=1,
                bias=False,
                norm_cfg=norm_cfg,
                act_cfg=None)

        self.query = embed(in_channels)  # theta
        self.value = embed(in_channels)  # phi
        self.key = embed(out_channels) if key_embed else nn.Identity()

    def share_embeddings(self, other: 'TaTConnector') -> None:
        """Use ``other``'s embedding modules (``query``/theta,
        ``value``/phi, ``key``/gamma: the same parameters) and its
        embeddings of a step when both see the same features.

        Args:
            other (TaTConnector): the connector whose embeddings are used.
        """
        if not isinstance(other, TaTConnector):
            raise TypeError('TaTConnector.share_embeddings needs another '
                            f'TaTConnector, got {type(other).__name__}.')
        mine = (self.in_channels, self.out_channels,
                isinstance(self.key, nn.Identity))
        theirs = (other.in_channels, other.out_channels,
                  isinstance(other.key, nn.Identity))
        if mine != theirs:
            raise ValueError(
                'TaTConnectors that share embeddings need the same '
                'in_channels, out_channels and key_embed; got (in, out, no '
                f'key embedding) {mine} and {theirs}.')
        if self.with_cp and not other.with_cp:
            raise ValueError(
                'with_cp=True has no effect on a connector that uses another '
                "connector's embeddings: set with_cp=True on that one.")
        if other is self or self._embeddings is other._embeddings:
            return
        self.query, self.value, self.key = other.query, other.value, other.key
        object.__setattr__(self, '_embedder', other._embedder)
        self.with_cp = self._embedder.with_cp
        other._embeddings.users += self._embeddings.users
        self._embeddings = other._embeddings

    # ------------------------------------------------------------------ #
    @property
    def last_attention(self) -> Optional[torch.Tensor]:
        """The attention map of the last forward (detached), formed now if
        that forward kept it on demand; None if it kept nothing."""
        if self._attention is None and self._pending is not None:
            q, k = self._pending
            self._pending = None
            try:  # the forward's precision, whatever autocast is active now
                no_autocast = torch.autocast(q.device.type, enabled=False)
            except RuntimeError:
                no_autocast = contextlib.nullcontext()
            with torch.no_grad(), no_autocast:
                self._attention = _attention_matrix(q, k)
        return self._attention

    @last_attention.setter
    def last_attention(self, value: Optional[torch.Tensor]) -> None:
        self._attention = value
        self._pending = None

    def _warn_once(self, key: str, message: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            warn(message, stacklevel=3)

    def _attend(self, qkv: List[torch.Tensor],
                keep: Optional[bool]) -> torch.Tensor:
        """Softmax attention over positions without ``1/sqrt(d)`` scaling,
        ``softmax(q k^T) v``; keeps the map as ``keep`` says.

        Args:
            qkv (list[torch.Tensor]): Queries ``(B, G, L, D)``, keys ``(B, G,
                L, D)`` and values ``(B, G, L, Dv)``; the list is emptied
                (each tensor is released as soon as it is replaced).
            keep (bool, optional): See ``keep_attention``.

        Returns:
            torch.Tensor: Output ``(B, G, L, Dv)``.
        """
        length, dim = qkv[0].shape[-2:]
        if keep or not _SDPA_HAS_SCALE or length <= dim:
            # the map is formed: asked for, or no larger than the queries
            # (patch groups, anchors), where the explicit path keeps less
            # for the backward than the fused one (the small map instead
            # of the output) and frees its inputs one by one there
            q, k, v = qkv
            qkv.clear()
            attn = _attention_matrix(q, k)
            if keep is not False:
                self._attention = attn.detach()
            return torch.matmul(attn, v)
        # the fused kernels want the last axis contiguous; these are then
        # the very tensors the attention's backward saves (copied one at a
        # time, each input released once copied)
        for i in range(3):
            qkv[i] = qkv[i].contiguous()
        q, k, v = qkv
        qkv.clear()
        if keep is None:
            self._pending = (q.detach(), k.detach())
        return F.scaled_dot_product_attention(q, k, v, scale=1.0)

    def _global(self, qkv: List[torch.Tensor],
                keep: Optional[bool]) -> torch.Tensor:
        """Multi-head attention over all positions of ``(N, C, H, W)``
        maps (the list ``qkv`` is emptied)."""
        n, c, h, w = qkv[2].shape
        heads = self.num_heads
        for i in range(3):
            qkv[i] = qkv[i].reshape(n, heads, c // heads,
                                    h * w).transpose(-1, -2)
        out = self._attend(qkv, keep)
        return out.transpose(-1, -2).reshape(n, c, h, w)

    def _patch_group(self, qkv: List[torch.Tensor],
                     keep: Optional[bool]) -> torch.Tensor:
        """Attention inside groups of stacked patches, reassembled (the
        list ``qkv`` is emptied, each map released once regrouped)."""
        n, c, h, w = qkv[2].shape
        device = qkv[2].device
        grid_h, grid_w = self.patch_grid
        ph, rows = _patch_positions(h, grid_h, device)
        pw, cols = _patch_positions(w, grid_w, device)
        overlap = grid_h * ph != h or grid_w * pw != w
        if overlap:
            self._warn_once(
                'patch_group',
                f'TaTConnector(patch_group): a {h}x{w} map does not split '
                f'into a {grid_h}x{grid_w} grid of equal patches; using '
                f'{ph}x{pw} patches whose starts are spread evenly, so '
                'neighbouring patches overlap (no row or column is dropped) '
                'and overlapped positions average their results.')
        layout = _GroupLayout(n, c, grid_h, ph, grid_w, pw, self.num_groups)
        # patches that tile the map, grouped by one permutation of a view
        tiled = not overlap and layout.order is not None
        for i in range(3):
            x = qkv[i]
            if overlap:  # the patches' rows and columns, gathered
                x = x[:, :, rows][..., cols]
            if tiled:
                qkv[i] = _Tokens.apply(x, layout)
            else:
                qkv[i] = layout.tokens(x.reshape(layout.patch_shape))
            del x
        length, dim = qkv[0].shape[-2:]
        if tiled and (keep or length <= dim or not _SDPA_HAS_SCALE):
            # the map is formed (see _attend), straight into (N, C, H, W)
            q, k, v = qkv
            qkv.clear()
            kept = None if keep is False else []
            out = _GroupAttention.apply(q, k, v, layout, kept)
            if kept:
                self._attention = kept[0]
            return out
        out = layout.patches(self._attend(qkv, keep))  # (N, C, n, ph, m, pw)
        if not overlap:
            return out.reshape(n, c, h, w)
        index = (rows[:, :, None, None] * w + cols[None, None]).reshape(-1)
        # patches covering each position: rows covering y times columns
        # covering x (computed on the device, no host read-back)
        per_row = (rows.reshape(-1, 1) == torch.arange(h, device=device)
                   ).sum(dim=0)
        per_col = (cols.reshape(-1, 1) == torch.arange(w, device=device)
                   ).sum(dim=0)
        count = (per_row[:, None] * per_col[None, :]).reshape(-1)
        merged = out.new_zeros(n, c, h * w).index_add(
            2, index, out.reshape(n, c, -1))
        return (merged / count.to(out.dtype)).reshape(n, c, h, w)

    def _anchor_grid(self, h: int, w: int) -> Tuple[int, int]:
        return min(self.anchor_size[0], h), min(self.anchor_size[1], w)

    def _anchor(self, qkv: List[torch.Tensor],
                keep: Optional[bool]) -> torch.Tensor:
        """Global attention on the anchor grid, optionally spread back (the
        list ``qkv`` is emptied)."""
        h, w = qkv[2].shape[-2:]
        grid = self._anchor_grid(h, w)
        divisible = h % grid[0] == 0 and w % grid[1] == 0
        if not divisible:
            self._warn_once(
                'anchor',
                f'TaTConnector(anchor): a {h}x{w} map does not split into a '
                f'{grid[0]}x{grid[1]} anchor grid of equal cells; adaptive '
                'average pooling uses cells of unequal size (neighbouring '
                'cells may share a row or column), nothing is dropped.')
        qkv[:] = [_pool_to(x, grid) for x in qkv]
        out = self._global(qkv, keep)
        if self.anchor_output == 'anchor':
            return out
        if divisible:
            out = out.repeat_interleave(h // grid[0], dim=2)
            return out.repeat_interleave(w // grid[1], dim=3)
        up_h = _window_upsample_matrix(h, grid[0], out.dtype, out.device)
        up_w = _window_upsample_matrix(w, grid[1], out.dtype, out.device)
        return torch.einsum('ia,ncab,jb->ncij', up_h, out, up_w)

    # ------------------------------------------------------------------ #
    def attention_map(self, feature_size: Tuple[int, int],
                      query: Tuple[int, int], sample: int = 0,
                      head: Optional[int] = None) -> torch.Tensor:
        """Where one student position attends in the last forward: the "TaT
        map" of ``last_attention`` for the query at ``(y, x)`` of the
        ``feature_size`` (H, W) map.

        * ``'global'``: the attention row of the query, an (H, W) map;
        * ``'anchor'``: the row of the anchor cell holding the query, on the
          anchor grid (a_h, a_w);
        * ``'patch_group'``: the query's patch group attends over the
          ph x pw positions inside its patches; that map is drawn at every
          patch of the group, an (H, W) map that is 0 elsewhere (where
          patches overlap, the query's own patch is drawn last).

        Args:
            feature_size (tuple[int, int]): (H, W) of the student map the
                connector last saw.
            query (tuple[int, int]): (y, x) position in that map.
            sample (int): batch index. Defaults to 0.
            head (int, optional): head (for ``'patch_group'``: ignored, a
                group has one map); None averages the heads.

        Returns:
            torch.Tensor: the map, float32 on the CPU.
        """
        if self.last_attention is None:
            raise RuntimeError(
                'TaTConnector has no attention map: run a forward first '
                '(with keep_attention=True or None, not False).')
        h, w = feature_size
        y, x = query
        if not (0 <= y < h and 0 <= x < w):
            raise ValueError(f'query {query} lies outside the {h}x{w} map.')
        attn = self.last_attention[sample].float().cpu()
        if self.mode == 'global':
            rows = attn.mean(0) if head is None else attn[head]
            return rows[y * w + x].reshape(h, w)
        if self.mode == 'anchor':
            a_h, a_w = self._anchor_grid(h, w)
            rows = attn.mean(0) if head is None else attn[head]
            cell = (y * a_h // h) * a_w + x * a_w // w
            return rows[cell].reshape(a_h, a_w)
        grid_h, grid_w = self.patch_grid
        ph, starts_y = _patch_starts(h, grid_h)
        pw, starts_x = _patch_starts(w, grid_w)
        # the last patch along each axis that holds the query
        i = max(k for k in range(grid_h) if starts_y[k] <= y)
        j = max(k for k in range(grid_w) if starts_x[k] <= x)
        per_group = grid_h * grid_w // self.num_groups
        group = (i * grid_w + j) // per_group
        local = attn[group][(y - starts_y[i]) * pw + (x - starts_x[j])]
        out = torch.zeros(h, w)
        patches = [p for p in range(group * per_group, (group + 1) * per_group)
                   if p != i * grid_w + j] + [i * grid_w + j]
        # the query's own patch last: where patches overlap it shows the
        # query's group map at the query's own patch
        for p in patches:
            r, c = starts_y[p // grid_w], starts_x[p % grid_w]
            out[r:r + ph, c:c + pw] = local.reshape(ph, pw)
        return out

    # ------------------------------------------------------------------ #
    def pool_teacher(self, teacher: torch.Tensor) -> torch.Tensor:
        """Average-pool the (detached) teacher to the anchor grid.

        Args:
            teacher (torch.Tensor): Teacher feature ``(N, C_t, H, W)``.

        Returns:
            torch.Tensor: ``(N, C_t, a_h, a_w)``, the target of the paper's
            anchor-point loss.
        """
        teacher = teacher.detach()
        return _pool_to(teacher, self._anchor_grid(*teacher.shape[-2:]))

    def teacher_target(self, teacher: torch.Tensor) -> torch.Tensor:
        """The tensor the loss should compare the connector's output with.

        Args:
            teacher (torch.Tensor): Teacher feature ``(N, C_t, H, W)``.

        Returns:
            torch.Tensor: ``pool_teacher(teacher)`` in ``'anchor'`` mode with
            ``anchor_output='anchor'``, else ``teacher.detach()``.
        """
        if self.mode == 'anchor' and self.anchor_output == 'anchor':
            return self.pool_teacher(teacher)
        return teacher.detach()

    def _embed(self, student: torch.Tensor, teacher: torch.Tensor
               ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``theta(S)``, ``gamma(T)``, ``phi(S)`` in one dtype, at least
        float32."""
        recompute = self.with_cp and torch.is_grad_enabled()

        def embed(module, x):
            # without a norm nothing is kept beyond the conv's input
            if recompute and getattr(module, 'with_norm', False):
                return _embed_recomputed(module, x)
            return module(x)

        # the keys first: the autograd engine runs the most recently
        # created nodes first, so the key embedding's backward (on the
        # teacher's channels, the largest input) comes last, after those of
        # the queries and values have freed their gradients
        k = upcast(embed(self.key, teacher))
        q = upcast(embed(self.query, student))
        v = upcast(embed(self.value, student))
        common = torch.promote_types(torch.promote_types(q.dtype, k.dtype),
                                     v.dtype)
        return q.to(common), k.to(common), v.to(common)

    def forward(self,
                student: torch.Tensor,
                teacher: Optional[torch.Tensor] = None,
                keep_attention: Optional[bool] = None) -> torch.Tensor:
        """Reconfigure the student with the teacher-aware attention.

        Args:
            student (torch.Tensor): Student feature ``(N, C_s, H, W)``.
            teacher (torch.Tensor): Teacher feature ``(N, C_t, H, W)``; it is
                detached here (it only supplies the keys).
            keep_attention (bool, optional): ``True`` forms and keeps the
                attention map of this forward, ``False`` keeps nothing; None
                (default) follows the constructor's ``keep_attention``.

        Returns:
            torch.Tensor: ``S'`` of shape ``(N, C_t, H, W)``, or
            ``(N, C_t, a_h, a_w)`` in ``'anchor'`` mode with
            ``anchor_output='anchor'``.
        """
        if teacher is None:
            raise ValueError('TaTConnector needs the teacher feature: call '
                             'it as connector(student, teacher).')
        given, teacher = teacher, teacher.detach()
        if student.dim() != 4 or teacher.dim() != 4:
            raise ValueError('TaTConnector expects (N, C, H, W) features, got '
                             f'student {tuple(student.shape)} and teacher '
                             f'{tuple(teacher.shape)}')
        if (student.shape[0] != teacher.shape[0]
                or student.shape[2:] != teacher.shape[2:]):
            raise ValueError(
                f'TaTConnector needs student and teacher features of the '
                f'same batch and spatial size, got student '
                f'{tuple(student.shape)} and teacher {tuple(teacher.shape)}; '
                'tap layers of the same stride (or resize one of them).')
        if student.shape[1] != self.in_channels or \
                teacher.shape[1] != self.out_channels:
            raise ValueError(
                f'TaTConnector was built for {self.in_channels} student and '
                f'{self.out_channels} teacher channels, got '
                f'{student.shape[1]} and {teacher.shape[1]}; set '
                'in_channels/out_channels to the tapped layers\' channels.')
        keep = self.keep_attention if keep_attention is None \
            else keep_attention
        # drop the last forward's map (or its q, k) before the new tensors
        self.last_attention = None
        dtype = student.dtype
        # a list the mode hands on, so that each embedding is released as
        # soon as it has been reshaped (no second reference here)
        qkv = list(self._embeddings.get(
            student, given, lambda: self._embedder._embed(student, teacher)))
        if self.mode == 'global':
            out = self._global(qkv, keep)
        elif self.mode == 'patch_group':
            out = self._patch_group(qkv, keep)
        else:
            out = self._anchor(qkv, keep)
        return out.to(dtype)


__all__ = ['TaTConnector']
