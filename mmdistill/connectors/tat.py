"""Target-aware Transformer connector (TaT) of paper 000.

Paper: "Knowledge Distillation via the Target-aware Transformer", Lin et al.,
CVPR 2022 (supplementary in ``shared/papers/000_f56eff672f0e4e33.txt``; the
method is defined in ``shared/SPEC.md`` section 3, "TaT").
"""
import warnings
from typing import Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from mmcv.cnn import ConvModule
from mmengine.model import BaseModule
from torch import nn

from mmdistill.registry import MODELS
from mmdistill.utils.tensor import upcast

_MODES = ('global', 'patch_group', 'anchor')
_ANCHOR_OUTPUTS = ('upsample', 'anchor')


def _pair(value: Union[int, Sequence[int]], name: str) -> Tuple[int, int]:
    """Turn ``value`` into a pair of positive ints."""
    if isinstance(value, int):
        value = (value, value)
    value = tuple(int(v) for v in value)
    if len(value) != 2 or min(value) < 1:
        raise ValueError(f'{name} must be a positive int or a pair of '
                         f'positive ints, got {value}')
    return value


def _patch_starts(size: int, num: int) -> Tuple[int, torch.Tensor]:
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
        tuple[int, torch.Tensor]: The patch length and the ``num`` starts.
    """
    length = -(-size // num)
    if num == 1:
        return length, torch.zeros(1, dtype=torch.long)
    starts = [(i * (size - length)) // (num - 1) for i in range(num)]
    return length, torch.tensor(starts, dtype=torch.long)


def _window_upsample_matrix(size: int, out: int, dtype: torch.dtype,
                            device: torch.device) -> torch.Tensor:
    """Transpose-like map from ``out`` adaptive-pool cells back to ``size``.

    Cell ``a`` of ``F.adaptive_avg_pool2d`` covers ``[floor(a * size / out),
    ceil((a + 1) * size / out))``. Row ``i`` of the returned ``(size, out)``
    matrix spreads weight ``1 / (number of cells covering i)`` over the cells
    covering position ``i``: nearest-neighbour upsampling when ``out``
    divides ``size``, the mean of the (at most two) covering cells otherwise.
    """
    mat = torch.zeros(size, out, dtype=dtype, device=device)
    for a in range(out):
        start = (a * size) // out
        end = -(-((a + 1) * size) // out)
        mat[start:end, a] = 1
    return mat / mat.sum(dim=1, keepdim=True)


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
    (mean squared error in the paper) compares with ``T``. Paper:
    ``shared/papers/000_f56eff672f0e4e33.txt`` (supplementary; definitions in
    ``shared/SPEC.md`` section 3, "TaT").

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

    The last attention map (the "TaT map") is kept, detached, in
    ``self.last_attention``: ``(N, num_heads, H*W, H*W)`` for ``'global'``,
    ``(N, num_groups, ph*pw, ph*pw)`` for ``'patch_group'`` and
    ``(N, num_heads, a_h*a_w, a_h*a_w)`` for ``'anchor'``; each row sums to
    1. Attention is computed in at least float32 (float64 stays float64)
    and the output is cast back to the student's dtype.

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
        keep_attention (bool): Keep the last attention map in
            ``self.last_attention``. Defaults to True.
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
                 keep_attention: bool = True,
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
        self.last_attention: Optional[torch.Tensor] = None
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

    # ------------------------------------------------------------------ #
    def _warn_once(self, key: str, message: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            warnings.warn(message, UserWarning, stacklevel=3)

    @staticmethod
    def _attend(q: torch.Tensor, k: torch.Tensor,
                v: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """Softmax attention over positions without ``1/sqrt(d)`` scaling.

        Args:
            q (torch.Tensor): Queries ``(B, G, L, D)``.
            k (torch.Tensor): Keys ``(B, G, L, D)``.
            v (torch.Tensor): Values ``(B, G, L, Dv)``.

        Returns:
            tuple[torch.Tensor, torch.Tensor]: Output ``(B, G, L, Dv)`` and
            attention ``(B, G, L, L)`` whose rows sum to 1.
        """
        attn = torch.matmul(q, k.transpose(-1, -2)).softmax(dim=-1)
        return torch.matmul(attn, v), attn

    def _global(self, q: torch.Tensor, k: torch.Tensor,
                v: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """Multi-head attention over all positions of ``(N, C, H, W)``."""
        n, c, h, w = v.shape
        heads = self.num_heads

        def tokens(x: torch.Tensor) -> torch.Tensor:
            return x.reshape(n, heads, c // heads, h * w).transpose(-1, -2)

        out, attn = self._attend(tokens(q), tokens(k), tokens(v))
        return out.transpose(-1, -2).reshape(n, c, h, w), attn

    def _patch_group(self, q: torch.Tensor, k: torch.Tensor,
                     v: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """Attention inside groups of stacked patches, reassembled."""
        n, c, h, w = v.shape
        grid_h, grid_w = self.patch_grid
        ph, rows = _patch_starts(h, grid_h)
        pw, cols = _patch_starts(w, grid_w)
        overlap = grid_h * ph != h or grid_w * pw != w
        if overlap:
            self._warn_once(
                'patch_group',
                f'TaTConnector(patch_group): a {h}x{w} map does not split '
                f'into a {grid_h}x{grid_w} grid of equal patches; using '
                f'{ph}x{pw} patches whose starts are spread evenly, so '
                'neighbouring patches overlap (no row or column is dropped) '
                'and overlapped positions average their results.')
        rows = (rows[:, None] + torch.arange(ph)[None]).to(v.device)
        cols = (cols[:, None] + torch.arange(pw)[None]).to(v.device)
        groups = self.num_groups
        per_group = grid_h * grid_w // groups

        def group_tokens(x: torch.Tensor) -> torch.Tensor:
            # (N, C, H, W) -> (N, C, n, ph, m, pw) -> (N, n, m, C, ph, pw)
            x = x[:, :, rows][..., cols].permute(0, 2, 4, 1, 3, 5)
            # patch-major channels inside a group: (N, G, per_group*C, L)
            x = x.reshape(n, groups, per_group * c, ph * pw)
            return x.transpose(-1, -2)

        out, attn = self._attend(
            group_tokens(q), group_tokens(k), group_tokens(v))
        out = out.transpose(-1, -2).reshape(n, grid_h, grid_w, c, ph, pw)
        out = out.permute(0, 3, 1, 4, 2, 5)  # (N, C, n, ph, m, pw)
        if not overlap:
            return out.reshape(n, c, h, w), attn
        index = (rows[:, :, None, None] * w + cols[None, None]).reshape(-1)
        count = torch.bincount(index, minlength=h * w).to(out.dtype)
        merged = out.new_zeros(n, c, h * w).index_add(
            2, index, out.reshape(n, c, -1))
        return (merged / count).reshape(n, c, h, w), attn

    def _anchor_grid(self, h: int, w: int) -> Tuple[int, int]:
        return min(self.anchor_size[0], h), min(self.anchor_size[1], w)

    def _anchor(self, q: torch.Tensor, k: torch.Tensor,
                v: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """Global attention on the anchor grid, optionally spread back."""
        h, w = v.shape[-2:]
        grid = self._anchor_grid(h, w)
        divisible = h % grid[0] == 0 and w % grid[1] == 0
        if not divisible:
            self._warn_once(
                'anchor',
                f'TaTConnector(anchor): a {h}x{w} map does not split into a '
                f'{grid[0]}x{grid[1]} anchor grid of equal cells; adaptive '
                'average pooling uses cells of unequal size (neighbouring '
                'cells may share a row or column), nothing is dropped.')
        out, attn = self._global(*(F.adaptive_avg_pool2d(x, grid)
                                   for x in (q, k, v)))
        if self.anchor_output == 'anchor':
            return out, attn
        if divisible:
            out = out.repeat_interleave(h // grid[0], dim=2)
            return out.repeat_interleave(w // grid[1], dim=3), attn
        up_h = _window_upsample_matrix(h, grid[0], out.dtype, out.device)
        up_w = _window_upsample_matrix(w, grid[1], out.dtype, out.device)
        return torch.einsum('ia,ncab,jb->ncij', up_h, out, up_w), attn

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
                '(with keep_attention=True).')
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
        return F.adaptive_avg_pool2d(teacher,
                                     self._anchor_grid(*teacher.shape[-2:]))

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

    def forward(self,
                student: torch.Tensor,
                teacher: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Reconfigure the student with the teacher-aware attention.

        Args:
            student (torch.Tensor): Student feature ``(N, C_s, H, W)``.
            teacher (torch.Tensor): Teacher feature ``(N, C_t, H, W)``; it is
                detached here (it only supplies the keys).

        Returns:
            torch.Tensor: ``S'`` of shape ``(N, C_t, H, W)``, or
            ``(N, C_t, a_h, a_w)`` in ``'anchor'`` mode with
            ``anchor_output='anchor'``.
        """
        if teacher is None:
            raise ValueError('TaTConnector needs the teacher feature: call '
                             'it as connector(student, teacher).')
        teacher = teacher.detach()
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
        dtype = student.dtype
        q = upcast(self.query(student))
        v = upcast(self.value(student))
        k = upcast(self.key(teacher))
        common = torch.promote_types(torch.promote_types(q.dtype, k.dtype),
                                     v.dtype)
        q, k, v = q.to(common), k.to(common), v.to(common)
        if self.mode == 'global':
            out, attn = self._global(q, k, v)
        elif self.mode == 'patch_group':
            out, attn = self._patch_group(q, k, v)
        else:
            out, attn = self._anchor(q, k, v)
        self.last_attention = attn.detach() if self.keep_attention else None
        return out.to(dtype)


__all__ = ['TaTConnector']
