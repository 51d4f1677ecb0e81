"""A distillation loss composed as transforms -> distance -> weighting, the
search space of KD-Zero (paper 003, ``shared/papers/003_160d77450bb11c03.txt``,
appendix E and Listings 1-4).

Each named piece is a small function; :class:`ComposableLoss` chains them::

    loss = loss_weight * tau^2 * reduce(w * D(t(S) / tau, t(T) / tau))

``t`` is the chain of transforms (applied to both sides, except the random
mask which covers the student only, as in MGD and the paper's text), ``D`` the
distance, reduced over the axes ``dims`` inside each compared vector, ``w`` the
weighting (computed from the untransformed tensors, never differentiated) and
``reduce`` the final reduction over what is left. CWD, LAD / CAD / PAD and the
L2 loss of paper 001 are special cases and give the same numbers as their
dedicated losses (see the examples of :class:`ComposableLoss`).

Axes are named by letters of ``nchw``: every tensor is handled as
(N, C, H, W); (N, C) inputs are (N, C, 1, 1) and (N, C, L) are (N, C, L, 1).
"""
import difflib
import inspect
from typing import Callable, Dict, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F

from mmdistill.masks import (channel_attention, check_ratio,
                             random_spatial_mask, spatial_attention)
from mmdistill.registry import MODELS
from mmdistill.utils.tensor import check_same_shape, upcast

_AXES = 'nchw'
Spec = Union[str, dict]


def parse_dims(dims: Optional[str], owner: str) -> Tuple[int, ...]:
    """``'hw'`` -> ``(2, 3)``: axis letters of ``nchw`` to axis indices."""
    if dims is None or dims == '':
        return ()
    if (not isinstance(dims, str) or any(d not in _AXES for d in dims)
            or len(set(dims)) != len(dims)):
        raise ValueError(
            f'{owner}: dims must be distinct letters of "nchw" (batch, '
            f'channel, height, width), e.g. "hw" or "chw"; got {dims!r}.')
    return tuple(sorted(_AXES.index(d) for d in dims))


# --------------------------------------------------------------- transforms
# Each transform maps an (N, C, H, W) tensor to an (N', C', H', W') tensor.


def _signed_sqrt(x, eps: float = 1e-12):
    # clamped so that the gradient at an exact 0 (after a ReLU) is finite
    return x.sign() * x.abs().clamp_min(eps).sqrt()


def _signed_log(x, eps: float = 1e-9):
    return x.sign() * torch.log(x.abs() + eps)


def _l2_normalize(x, dims: str = 'chw', eps: float = 1e-12):
    axes = parse_dims(dims, 'l2_normalize')
    return x / _norm(x, axes).clamp_min(eps)


def _norm(x, axes):
    """L2 norm over ``axes`` (kept); its gradient at a zero vector is 0, not
    NaN (unlike ``pow(2).sum().sqrt()``)."""
    return torch.linalg.vector_norm(x, dim=axes, keepdim=True)


def _softmax(x, dims: str = 'c'):
    return _flat_softmax(x, parse_dims(dims, 'softmax'), log=False)


def _log_softmax(x, dims: str = 'c'):
    return _flat_softmax(x, parse_dims(dims, 'log_softmax'), log=True)


def _flat_softmax(x, axes, log: bool):
    """Softmax over several axes at once (their elements form one vector)."""
    if not axes:
        raise ValueError('softmax needs at least one axis in dims.')
    rest = [a for a in range(4) if a not in axes]
    moved = x.permute(*rest, *axes)
    flat = moved.reshape(*moved.shape[:len(rest)], -1)
    out = (F.log_softmax if log else F.softmax)(flat, dim=-1)
    order = rest + list(axes)
    return out.reshape(moved.shape).permute(
        *[order.index(a) for a in range(4)])


def _spatial_attention(x, tau: float = 0.5):
    return spatial_attention(x, tau)[:, None]


def _channel_attention(x, tau: float = 0.5):
    return channel_attention(x, tau)[:, :, None, None]


def _pool(x, ratio: int = 2, mode: str = 'max'):
    pool = {'max': F.max_pool2d, 'avg': F.avg_pool2d}[_pool_mode(mode)]
    return pool(x, kernel_size=ratio, stride=ratio, ceil_mode=True)


def _multi_scale(x, scales: Sequence[int] = (1, 2, 4), mode: str = 'max'):
    pool = {'max': F.adaptive_max_pool2d,
            'avg': F.adaptive_avg_pool2d}[_pool_mode(mode)]
    n, c = x.shape[:2]
    cells = [pool(x, int(s)).reshape(n, c, -1) for s in scales]
    return torch.cat(cells, dim=2)[:, :, None]


def _pool_mode(mode):
    if mode not in ('max', 'avg'):
        raise ValueError(f'pooling mode must be "max" or "avg", got {mode!r}')
    return mode


def _local(x, size: int = 2):
    n, c, h, w = x.shape
    if h % size or w % size:
        raise ValueError(
            f'local: a {h}x{w} map does not split into {size}x{size} '
            'patches; pick a size that divides both sides (or pool first).')
    x = x.reshape(n, c, h // size, size, w // size, size)
    return x.permute(0, 1, 2, 4, 3, 5).reshape(n, -1, size, size)


def _gram(x, over: str = 'channel'):
    n, c = x.shape[:2]
    if over == 'channel':
        flat = x.reshape(n, c, -1)
        return torch.bmm(flat, flat.transpose(1, 2))[..., None]
    if over == 'sample':
        flat = x.reshape(n, -1)
        return (flat @ flat.t())[:, :, None, None]
    raise ValueError(f'gram: over must be "channel" (C x C per sample) or '
                     f'"sample" (N x N over the batch), got {over!r}.')


TRANSFORMS: Dict[str, Callable] = {
    # elementwise functions
    'abs': torch.abs,
    'relu': F.relu,
    'leaky_relu': F.leaky_relu,
    'sigmoid': torch.sigmoid,
    'tanh': torch.tanh,
    'swish': F.silu,
    'mish': F.mish,
    'exp': torch.exp,
    'square': torch.square,
    'pow': lambda x, p=4: x.pow(p),
    'sqrt': _signed_sqrt,
    'log': _signed_log,
    'scale': lambda x: (x + 1.0) / 2.0,
    # norms and softmaxes over chosen axes
    'l2_normalize': _l2_normalize,
    'softmax': _softmax,
    'log_softmax': _log_softmax,
    # attention maps (FGD's A_S and A_C)
    'spatial_attention': _spatial_attention,
    'channel_attention': _channel_attention,
    # spatial structure
    'pool': _pool,
    'multi_scale': _multi_scale,
    'local': _local,
    'gram': _gram,
}
# Transforms that apply to the student only.
STUDENT_ONLY = ('random_mask', )


def _closest(name: str, names) -> str:
    close = difflib.get_close_matches(str(name), list(names), n=1)
    return f' (did you mean {close[0]!r}?)' if close else ''


def _split_spec(spec: Spec, kind: str, names) -> Tuple[str, dict]:
    """``'abs'`` or ``dict(type='softmax', dims='hw')`` -> (name, kwargs)."""
    if isinstance(spec, str):
        name, kwargs = spec, {}
    elif isinstance(spec, dict) and 'type' in spec:
        kwargs = dict(spec)
        name = kwargs.pop('type')
    else:
        raise ValueError(
            f'ComposableLoss: a {kind} is a name or a dict with a "type" '
            f'key, got {spec!r}.')
    if name not in names:
        raise ValueError(
            f'ComposableLoss: unknown {kind} {name!r}{_closest(name, names)}.'
            f' Known: {", ".join(sorted(names))}.')
    return name, kwargs


def _check_kwargs(fn, kwargs: dict, kind: str, name: str,
                  positional: int) -> None:
    """Raise at build time for arguments ``fn`` does not take (after its
    first ``positional`` parameters, the tensors)."""
    if isinstance(fn, type(torch.abs)) or not kwargs:
        if kwargs:
            raise ValueError(f'ComposableLoss: the {kind} {name!r} takes no '
                             f'arguments, got {sorted(kwargs)}.')
        return
    params = list(inspect.signature(fn).parameters)[positional:]
    unknown = sorted(set(kwargs) - set(params))
    if unknown:
        takes = params or 'no arguments'
        raise ValueError(
            f'ComposableLoss: the {kind} {name!r} takes {takes}, got '
            f'unknown {unknown}.')


# ---------------------------------------------------------------- distances
# Each distance takes the transformed (N, C, H, W) tensors and the axes it
# sums over inside one compared vector, and keeps those axes (size 1).


def _elementwise(fn):

    def distance(s, t, axes):
        d = fn(s, t)
        return d.sum(dim=axes, keepdim=True) if axes else d

    return distance


def _kl(s, t, axes, inputs: str = 'logits', eps: float = 1e-12):
    """KL(teacher || student) of the distributions over ``axes``."""
    if not axes:
        raise ValueError('ComposableLoss: the kl distance needs dims, the '
                         'axes that form each distribution (e.g. "c" for '
                         'class logits, "hw" for CWD).')
    if inputs == 'logits':
        log_s = _flat_softmax(s, axes, log=True)
        log_t = _flat_softmax(t, axes, log=True)
    elif inputs == 'probs':
        log_s, log_t = s.clamp_min(eps).log(), t.clamp_min(eps).log()
        if not (torch.allclose(s.sum(dim=axes), torch.ones(()).to(s),
                               atol=1e-3)):
            raise ValueError(
                'ComposableLoss: kl with inputs="probs" needs distributions '
                'over dims (softmax them first); with tau != 1 the '
                'probabilities are divided by tau and no longer sum to 1: '
                'use inputs="logits" for a tempered KL.')
    else:
        raise ValueError('kl inputs must be "logits" (softmax taken over '
                         f'dims) or "probs", got {inputs!r}.')
    return (log_t.exp() * (log_t - log_s)).sum(dim=axes, keepdim=True)


def _cosine(s, t, axes, eps: float = 1e-8, centre: bool = False):
    if not axes:
        raise ValueError('ComposableLoss: cosine and pearson distances need '
                         'dims, the axes of the compared vectors (e.g. "c").')
    if centre:
        s = s - s.mean(dim=axes, keepdim=True)
        t = t - t.mean(dim=axes, keepdim=True)
    dot = (s * t).sum(dim=axes, keepdim=True)
    norms = _norm(s, axes) * _norm(t, axes)
    return 1.0 - dot / norms.clamp_min(eps)


def _correlation(s, t, axes, alpha: float = 1.01, eps: float = 1e-8):
    """Paper 003 Eq. 12: standardise every feature over the batch, take the
    diagonal of the student-teacher cross-correlation, and penalise its
    distance to 1: ``log2 sum_i |v_i - 1|^(2 alpha)``. As in the paper's
    listing the standard deviation is the unbiased one and ``v`` divides by
    N, so ``v_i <= (N - 1) / N`` and identical inputs give a finite minimum
    (``log2(d * N^(-2 alpha))``), not minus infinity."""
    n = s.shape[0]
    if n < 2:
        raise ValueError('ComposableLoss: the correlation distance compares '
                         'features across the batch and needs a batch of at '
                         'least 2 samples per GPU.')
    s, t = s.reshape(n, -1), t.reshape(n, -1)
    s = (s - s.mean(0)) / (s.std(0) + eps)
    t = (t - t.mean(0)) / (t.std(0) + eps)
    v = (s * t).sum(0) / n
    return torch.log2((v - 1).abs().pow(2 * alpha).sum())


DISTANCES: Dict[str, Callable] = {
    'l1': _elementwise(lambda s, t: (s - t).abs()),
    'l2': _elementwise(lambda s, t: (s - t).pow(2)),
    'smooth_l1': _elementwise(
        lambda s, t: F.smooth_l1_loss(s, t, reduction='none')),
    'kl': _kl,
    'cosine': _cosine,
    'pearson': lambda s, t, axes, eps=1e-8: _cosine(s, t, axes, eps, True),
    'correlation': _correlation,
}
# Distances that compare the whole batch at once and return a scalar.
BATCH_DISTANCES = ('correlation', )

# ---------------------------------------------------------------- weighting
# Each weighting reads the untransformed student and teacher tensors as
# logits with classes on axis 1 (N, K) or (N, K, H, W) and returns a weight
# of shape (N, 1, H, W), never differentiated, and the positions the mean
# runs over (None: all; focal: the labelled ones).


def _labels(data_samples, shape, ignore_index: int) -> torch.Tensor:
    """Ground-truth class per sample (mmpretrain ``gt_label``) or per pixel
    (mmseg ``gt_sem_seg``, resized nearest), as (N, 1, H, W) long; pixels
    labelled ``ignore_index`` are -1 (class labels are never ignored)."""
    n, _, h, w = shape
    if data_samples is None or len(data_samples) != n:
        raise ValueError(
            'ComposableLoss: the focal weighting needs the ground truth of '
            'the batch (data_samples with gt_label or gt_sem_seg); got '
            f'{None if data_samples is None else len(data_samples)} samples '
            f'for a batch of {n}.')
    out = []
    for sample in data_samples:
        if getattr(sample, 'gt_sem_seg', None) is not None:
            seg = sample.gt_sem_seg.data.float()
            seg = seg.reshape(1, 1, *seg.shape[-2:])
            label = F.interpolate(seg, size=(h, w), mode='nearest')[0, 0]
            label = label.long()
            label = label.masked_fill(label == ignore_index, -1)
        elif getattr(sample, 'gt_label', None) is not None:
            label = torch.as_tensor(sample.gt_label).reshape(-1)[:1]
            label = label.long().reshape(1, 1).expand(h, w)
        else:
            raise ValueError(
                'ComposableLoss: the focal weighting needs gt_label '
                '(classification) or gt_sem_seg (segmentation) in every '
                'data sample; detection data samples carry neither. Use '
                'another weighting for detectors.')
        out.append(label)
    labels = torch.stack(out)[:, None]
    if labels.max() >= shape[1]:
        raise ValueError(
            f'ComposableLoss: the focal weighting reads the tensors as '
            f'logits of {shape[1]} classes, but a ground-truth label is '
            f'{int(labels.max())}: use it on class logits (e.g. '
            'decode_head.conv_seg, head.fc) of the dataset\'s classes.')
    return labels


def _teacher_entropy(s, t, data_samples):
    """Entropy of the teacher's class distribution, divided by log K
    (in [0, 1]): uncertain teacher predictions weigh more. (The paper's
    Listing 4 uses the teacher's squared standard deviation under this
    name; this follows its text, "the entropy of the teacher's
    knowledge".)"""
    if t.shape[1] < 2:
        raise ValueError('ComposableLoss: teacher_entropy needs logits of at '
                         f'least 2 classes on axis 1, got {t.shape[1]}.')
    log_p = F.log_softmax(t, dim=1)
    entropy = -(log_p.exp() * log_p).sum(dim=1, keepdim=True)
    return entropy / torch.log(torch.tensor(float(t.shape[1]))), None


def _confidence(s, t, data_samples):
    """The teacher's confidence: its largest class probability. (Listing 4
    uses ``1 - CE`` of the student; this follows the text, "the confidence
    level of the teacher's model knowledge".)"""
    return F.softmax(t, dim=1).amax(dim=1, keepdim=True), None


def _similarity(s, t, data_samples, eps: float = 1e-8):
    """Cosine similarity of the student and teacher vectors along axis 1,
    clamped at 0 (Listing 4 uses it unclamped: a negative weight would push
    the student away from the teacher)."""
    weight = F.cosine_similarity(s, t, dim=1, eps=eps)[:, None]
    return weight.clamp_min(0), None


def _focal(s, t, data_samples, ignore_index: int = 255, eps: float = 1e-7):
    """Paper 003 Eq. 13 (after WSLD): ``1 - exp(-CE_s / CE_t)`` with the
    cross-entropies of student and teacher against the ground truth; ignored
    pixels weigh 0."""
    labels = _labels(data_samples, s.shape, ignore_index).to(s.device)
    valid = labels >= 0
    index = labels.clamp_min(0)
    ce_s = -F.log_softmax(s, dim=1).gather(1, index)
    ce_t = -F.log_softmax(t, dim=1).gather(1, index)
    ratio = (ce_s / (ce_t + eps)).clamp_min(0)
    return (1 - torch.exp(-ratio)) * valid, valid


WEIGHTINGS: Dict[str, Optional[Callable]] = {
    'none': None,
    'teacher_entropy': _teacher_entropy,
    'confidence': _confidence,
    'similarity': _similarity,
    'focal': _focal,
}

REDUCTIONS = ('mean', 'sum', 'batch')


def _as_4d(x: torch.Tensor, side: str) -> torch.Tensor:
    if x.dim() == 2:
        return x[:, :, None, None]
    if x.dim() == 3:
        return x[..., None]
    if x.dim() == 4:
        return x
    raise ValueError(
        f'ComposableLoss takes (N, C), (N, C, L) or (N, C, H, W) tensors; '
        f'the {side} has shape {tuple(x.shape)}.')


@MODELS.register_module()
class ComposableLoss(nn.Module):
    """A loss composed of transforms, a distance and a weighting (KD-Zero,
    paper 003, ``shared/papers/003_160d77450bb11c03.txt``, appendix E)::

        loss = loss_weight * tau^2 * reduce(w * D(t(S) / tau, t(T) / tau))

    * ``transforms`` (``t``), applied in order to student and teacher (the
      random mask to the student only): elementwise ``abs``, ``relu``,
      ``leaky_relu``, ``sigmoid``, ``tanh``, ``swish``, ``mish``, ``exp``,
      ``square``, ``pow`` (p), ``sqrt`` and ``log`` (both sign-preserving:
      ``sign(x) sqrt|x|``, ``sign(x) log(|x| + 1e-9)``), ``scale``
      ((x + 1) / 2); ``l2_normalize`` / ``softmax`` / ``log_softmax`` over
      ``dims``; FGD's ``spatial_attention`` (N, 1, H, W) and
      ``channel_attention`` (N, C, 1, 1) (temperature ``tau``, default 0.5);
      ``random_mask`` (MGD's spatial mask, ``ratio``, student only);
      ``pool`` (max or avg by ``ratio``), ``multi_scale`` (pyramid of
      adaptive pools to ``scales`` x ``scales`` cells, concatenated:
      (N, C, 1, sum scales^2)), ``local`` (``size`` x ``size`` patches:
      (N, C*H/size*W/size, size, size)), ``gram`` (``over='channel'``:
      (N, C, C, 1); ``over='sample'``: (N, N, 1, 1)).
    * ``distance`` (``D``), summed over ``dims`` inside each compared vector:
      ``l1`` |s - t|, ``l2`` (s - t)^2, ``smooth_l1`` (beta 1), ``kl``
      (KL(teacher || student) of the softmaxes over ``dims``, or of
      probabilities with ``inputs='probs'``), ``cosine`` 1 - cos,
      ``pearson`` 1 - Pearson correlation, ``correlation`` (Eq. 12,
      ``alpha``: log2 sum_i |v_i - 1|^(2 alpha) over the diagonal of the
      batch-standardised cross-correlation; a scalar, batch >= 2).
    * ``weighting`` (``w``) from the untransformed tensors read as logits
      (classes on axis 1), per sample or per pixel: ``none``,
      ``teacher_entropy`` (teacher entropy / log K), ``confidence`` (the
      teacher's top probability), ``similarity`` (student-teacher cosine),
      ``focal`` (Eq. 13, ``1 - exp(-CE_s / CE_t)`` against the ground truth
      of ``data_samples``: mmpretrain ``gt_label`` or mmseg ``gt_sem_seg``).
    * ``reduction``: ``mean`` over the remaining elements, ``sum``, or
      ``batch`` (sum divided by the batch size N).
    * ``tau``: the temperature the transformed tensors are divided by; the
      loss is multiplied by tau^2. ``loss_weight`` is the paper's magnitude.

    Examples (each gives the numbers of the dedicated loss)::

        # CWD with tau = 4, weight 3
        dict(type='ComposableLoss', distance=dict(type='kl', dims='hw'),
             tau=4.0, loss_weight=3.0)
        # LAD (paper 002, Eq. 5) with lambda 10
        dict(type='ComposableLoss',
             transforms=[dict(type='l2_normalize', dims='chw')],
             distance=dict(type='l2', dims='chw'), loss_weight=10.0)
        # CAD: dims 'hw' for both; PAD: dims 'c' for both
        # feature L2 of paper 001, alpha 2e-5
        dict(type='ComposableLoss', distance='l2', reduction='batch',
             loss_weight=2e-5)

    Args:
        transforms (list[str | dict]): the chain ``t``, names or dicts with
            ``type`` and the transform's arguments. Defaults to none.
        distance (str | dict): the distance, a name or a dict with ``type``,
            ``dims`` and the distance's arguments. Defaults to ``'l2'``.
        weighting (str | dict): the weighting, a name or a dict with
            ``type`` and its arguments (``ignore_index`` for ``focal``).
            Defaults to ``'none'``.
        reduction (str): ``'mean'``, ``'sum'`` or ``'batch'``.
            Defaults to ``'mean'``.
        tau (float): temperature. Defaults to 1.0.
        loss_weight (float): the magnitude. Defaults to 1.0.
    """

    def __init__(self,
                 transforms: Sequence[Spec] = (),
                 distance: Spec = 'l2',
                 weighting: Spec = 'none',
                 reduction: str = 'mean',
                 tau: float = 1.0,
                 loss_weight: float = 1.0) -> None:
        super().__init__()
        if isinstance(transforms, (str, dict)):
            transforms = [transforms]
        names = list(TRANSFORMS) + list(STUDENT_ONLY)
        self.transforms = [
            _split_spec(t, 'transform', names) for t in transforms
        ]
        for name, kwargs in self.transforms:
            if name != 'random_mask':
                _check_kwargs(TRANSFORMS[name], kwargs, 'transform', name, 1)
            elif set(kwargs) - {'ratio'}:
                raise ValueError('ComposableLoss: random_mask takes ratio.')
        for name, kwargs in self.transforms:
            if name == 'random_mask':
                check_ratio(kwargs.get('ratio', 0.65))
            for key in ('dims', ):
                if key in kwargs:
                    parse_dims(kwargs[key], name)
        self.distance, dist_kwargs = _split_spec(distance, 'distance',
                                                 DISTANCES)
        self.axes = parse_dims(dist_kwargs.pop('dims', None), self.distance)
        self.distance_kwargs = dist_kwargs
        if self.distance in ('l1', 'l2', 'smooth_l1'):
            if dist_kwargs:
                raise ValueError(
                    f'ComposableLoss: the {self.distance} distance takes '
                    f'only dims, got {sorted(dist_kwargs)}.')
        else:
            _check_kwargs(DISTANCES[self.distance], dist_kwargs, 'distance',
                          self.distance, 3)
        self.weighting, self.weighting_kwargs = _split_spec(
            weighting, 'weighting', WEIGHTINGS)
        if WEIGHTINGS[self.weighting] is not None:
            _check_kwargs(WEIGHTINGS[self.weighting], self.weighting_kwargs,
                          'weighting', self.weighting, 3)
        elif self.weighting_kwargs:
            raise ValueError('ComposableLoss: weighting "none" takes no '
                             'arguments.')
        if self.distance in BATCH_DISTANCES and self.weighting != 'none':
            raise ValueError(
                f'ComposableLoss: the {self.distance} distance compares the '
                'whole batch at once and gives one number; it takes no '
                'weighting (use weighting="none").')
        if reduction not in REDUCTIONS:
            raise ValueError(f'ComposableLoss: reduction must be one of '
                             f'{REDUCTIONS}, got {reduction!r}.')
        if tau <= 0:
            raise ValueError(f'ComposableLoss needs tau > 0, got {tau}.')
        self.reduction = reduction
        self.tau = tau
        self.loss_weight = loss_weight

    def transform(self, x: torch.Tensor, student: bool) -> torch.Tensor:
        """Apply the transform chain to one side (4-D input)."""
        for name, kwargs in self.transforms:
            if name == 'random_mask':
                if student:
                    mask = random_spatial_mask(
                        x.shape[0], x.shape[2], x.shape[3],
                        kwargs.get('ratio', 0.65), device=x.device)
                    x = x * mask.to(x.dtype)
                continue
            x = TRANSFORMS[name](x, **kwargs)
        return x

    def forward(self,
                student: torch.Tensor,
                teacher: torch.Tensor,
                data_samples: Optional[list] = None) -> torch.Tensor:
        """Compute the composed loss.

        Args:
            student (torch.Tensor): student tensor, (N, C), (N, C, L) or
                (N, C, H, W).
            teacher (torch.Tensor): teacher tensor of the same shape; it is
                detached.
            data_samples (list, optional): the batch's data samples; the
                ``focal`` weighting reads their ground truth.

        Returns:
            torch.Tensor: scalar loss.
        """
        check_same_shape('ComposableLoss', student, teacher)
        s = _as_4d(upcast(student), 'student')
        t = _as_4d(upcast(teacher.detach()), 'teacher')
        ts = self.transform(s, student=True) / self.tau
        tt = self.transform(t, student=False) / self.tau
        check_same_shape(
            'ComposableLoss (after the transforms)', ts, tt,
            'the transforms must give both sides the same shape.')
        d = DISTANCES[self.distance](ts, tt, self.axes,
                                     **self.distance_kwargs)
        if self.distance not in BATCH_DISTANCES:
            d, count = self._weigh(d, s, t, data_samples)
            if self.reduction == 'mean':
                d = d.sum() / count
            elif self.reduction == 'sum':
                d = d.sum()
            else:
                d = d.sum() / s.shape[0]
        return self.loss_weight * self.tau**2 * d

    def _weigh(self, d, s, t, data_samples):
        """The weighted distance and the count its mean divides by: every
        element, or for ``focal`` the elements of labelled positions."""
        fn = WEIGHTINGS[self.weighting]
        if fn is None:
            return d, d.numel()
        with torch.no_grad():
            w, valid = fn(s.detach(), t, data_samples,
                          **self.weighting_kwargs)
        if any(ws not in (1, ds) for ws, ds in zip(w.shape, d.shape)):
            raise ValueError(
                f'ComposableLoss: the {self.weighting} weighting gives '
                f'weights of shape {tuple(w.shape)} (one per sample and '
                f'position of the input), which does not fit the distance '
                f'of shape {tuple(d.shape)} left after the transforms and '
                'the distance dims: keep the positions (no pooling, no '
                'dims "h"/"w") or use weighting="none".')
        count = d.numel() if valid is None else max(
            int(valid.expand(d.shape).sum()), 1)
        return d * w.to(d.dtype), count
