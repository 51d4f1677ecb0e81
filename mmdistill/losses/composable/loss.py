"""A distillation loss composed as transforms -> distance -> weighting, the
search space of KD-Zero.

Paper: "KD-Zero: Evolving Knowledge Distiller for Any Teacher-Student Pairs",
Lujun Li et al., NeurIPS 2023 (https://openreview.net/forum?id=OlMKa5YZ8e).
Implemented: the distiller search space of its supplementary material,
appendix E (E.1 transforms, E.2 distances, E.3 loss weights) and the unified
loss of Listings 1-4.

Each named piece is a small function; :class:`ComposableLoss` chains them::

    loss = loss_weight * tau^2 * reduce(w * D(t(S) / tau, t(T) / tau))

``t`` is the chain of transforms (applied to both sides, except the random
mask which covers the student only, as in MGD and the paper's text), ``D`` the
distance, reduced over the axes ``dims`` inside each compared vector, ``w`` the
weighting (computed from the untransformed tensors, never differentiated) and
``reduce`` the final reduction over what is left. CWD, LAD / CAD / PAD and the
L2 loss of the MLP-connector paper are special cases and give the same
numbers as their dedicated losses (see the examples of
:class:`ComposableLoss`).

Axes are named by letters of ``nchw``: every tensor is handled as
(N, C, H, W); (N, C) inputs are (N, C, 1, 1) and (N, C, L) are (N, C, L, 1).
"""
from typing import Optional, Sequence

import torch
import torch.nn as nn

from mmdistill.masks import check_ratio, random_spatial_mask
from mmdistill.registry import MODELS
from mmdistill.utils.tensor import check_same_shape, upcast
from .axes import _as_4d, parse_dims
from .distances import BATCH_DISTANCES, DISTANCES
from .spec import Spec, _check_kwargs, _split_spec
from .transforms import STUDENT_ONLY, TRANSFORMS
from .weightings import WEIGHTINGS

REDUCTIONS = ('mean', 'sum', 'batch')


@MODELS.register_module()
class ComposableLoss(nn.Module):
    """A loss composed of transforms, a distance and a weighting (KD-Zero,
    supplementary appendix E)::

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
        # LAD (angular-distillation paper, Eq. 5) with lambda 10
        dict(type='ComposableLoss',
             transforms=[dict(type='l2_normalize', dims='chw')],
             distance=dict(type='l2', dims='chw'), loss_weight=10.0)
        # CAD: dims 'hw' for both; PAD: dims 'c' for both
        # feature L2 of the MLP-connector paper, alpha 2e-5
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
        # a tensor, not a Python int: no read-back of the labelled count
        count = d.numel() if valid is None else valid.expand(
            d.shape).sum().clamp_min(1).to(d.dtype)
        return d * w.to(d.dtype), count
