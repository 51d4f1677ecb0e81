"""What hooks may change on a distiller between iterations, in one place.

Hooks never set attributes of the distiller; they reach its
:class:`DistillControls` (``distiller.controls``):

* ``DistillLossScheduleHook`` sets ``loss_scales`` (a factor per pair);
* ``AutoLossWeightHook`` reads the measured losses and sets
  ``loss_weights`` of the pairs configured with ``loss_weight='auto'``;
* ``FeatureStatsHook`` sets ``collect_stats`` for the next iteration and
  takes the pairs' statistics, computed as each pair runs, with
  :meth:`take_stats`.

The distiller asks it, per pair, what to add to its losses
(:meth:`weighted`); nothing here reads a value back to the host.
"""
from typing import Dict, Iterable, Optional

import torch
import torch.nn.functional as F

LOSS_PREFIX = 'loss_distill_'
#: logged (not optimised: no 'loss' in the name) while a pair's automatic
#: weight is measured
RAW_PREFIX = 'distill_raw_'


@torch.no_grad()
def feature_stats_tensors(raw: torch.Tensor, student: torch.Tensor,
                          teacher: torch.Tensor,
                          loss: torch.Tensor) -> Dict[str, torch.Tensor]:
    """A pair's feature statistics as 0-d float32 tensors, computed on the
    features' device without reading anything back to the host (what
    :class:`~mmdistill.hooks.FeatureStatsHook` logs; see
    :func:`~mmdistill.hooks.feature_stats.feature_stats`).

    Args:
        raw (torch.Tensor): The student tap, before the connector.
        student (torch.Tensor): The student after the connector (``raw``
            itself for a pair without one: then ``mse`` and ``cos`` are
            given once, without the ``_before/_after_connector`` suffix).
        teacher (torch.Tensor): The teacher tap (the loss's target).
        loss (torch.Tensor): The pair's loss.

    Returns:
        dict[str, torch.Tensor]: Name -> 0-d tensor.
    """

    def std(x):
        if x.numel() > 1:
            return x.float().std()
        return x.new_zeros((), dtype=torch.float32)

    out = dict(loss=loss.detach().float().reshape(()),
               student_mean=raw.float().mean(),
               student_std=std(raw),
               teacher_mean=teacher.float().mean(),
               teacher_std=std(teacher))
    # a pair without a connector compares its tap itself: once, unsuffixed
    compared = (('', raw), ) if student is raw else (
        ('_before_connector', raw), ('_after_connector', student))
    for tag, x in compared:
        if x.shape == teacher.shape:
            x, t = x.float(), teacher.float()
            out[f'mse{tag}'] = (x - t).pow(2).mean()
            out[f'cos{tag}'] = F.cosine_similarity(
                x.reshape(x.shape[0], -1), t.reshape(t.shape[0], -1),
                dim=1).mean()
    return out


class DistillControls:
    """The settings of a distiller that change while it trains.

    Args:
        pairs (Iterable[str]): The (expanded) pair names.
        auto_weight (Iterable[str]): The pairs whose loss config says
            ``loss_weight='auto'``.

    Attributes:
        loss_scales (dict[str, float]): Pair -> schedule factor (missing
            pairs count 1). A pair at 0 contributes a zero loss; when every
            pair is at 0 the teacher does not run.
        loss_weights (dict[str, float | None]): Pair -> automatic weight,
            for the ``loss_weight='auto'`` pairs only; None until set. While
            None, the pair's loss is computed and logged as
            ``distill_raw_<pair>`` but adds zero to the optimised loss.
        collect_stats (bool): Whether the next ``loss()`` computes its
            pairs' feature statistics for :meth:`take_stats`.
        feature_stats (dict[str, dict[str, float]]): The last statistics
            ``FeatureStatsHook`` computed, per pair, for other hooks.
    """

    def __init__(self, pairs: Iterable[str],
                 auto_weight: Iterable[str] = ()) -> None:
        self.pairs = list(pairs)
        self.loss_scales: Dict[str, float] = {}
        #: pair -> id of the DistillLossScheduleHook that sets its factor
        #: (one schedule per pair)
        self.schedule_owners: Dict[str, int] = {}
        self.loss_weights: Dict[str, Optional[float]] = {
            name: None for name in auto_weight}
        #: set by ``AutoLossWeightHook`` when training starts: without it
        #: nothing would ever set the automatic weights
        self.auto_weights_hooked = False
        self.collect_stats = False
        self.feature_stats: Dict[str, Dict[str, float]] = {}
        self._stats: Dict[str, Dict[str, torch.Tensor]] = {}

    def factor(self, name: str) -> Optional[float]:
        """What the pair's loss is multiplied by: schedule factor times
        automatic weight; None while the automatic weight is measured."""
        scale = self.loss_scales.get(name, 1.0)
        if name in self.loss_weights:
            weight = self.loss_weights[name]
            return None if weight is None else scale * weight
        return scale

    @property
    def teacher_needed(self) -> bool:
        """False when every pair is scheduled off and none has its
        automatic weight measured (that needs the pair's loss, whatever its
        schedule factor)."""
        return self.measuring or any(
            self.loss_scales.get(name, 1.0) for name in self.pairs)

    @property
    def measuring(self) -> bool:
        """Whether some automatic weight is still unset."""
        return any(w is None for w in self.loss_weights.values())

    def weighted(self, name: str,
                 value: torch.Tensor) -> Dict[str, torch.Tensor]:
        """The entries a pair's loss adds to the distiller's losses."""
        factor = self.factor(name)
        key = LOSS_PREFIX + name
        if factor is None:
            # measured, not optimised: * 0 keeps the graph, so the connector
            # gets a (zero) gradient and DDP sees every parameter used
            return {key: value * 0.0, RAW_PREFIX + name: value.detach()}
        return {key: value if factor == 1.0 else value * factor}

    def record_stats(self, name: str, raw: torch.Tensor,
                     student: torch.Tensor, teacher: torch.Tensor,
                     value: torch.Tensor) -> None:
        """When statistics were asked for this iteration, compute the
        pair's now, as it runs (0-d tensors on the device, nothing read
        back), so that no feature map is kept for them past the pair's own
        backward (nor the connector's output a pair's ``with_cp`` drops)."""
        if self.collect_stats:
            self._stats[name] = feature_stats_tensors(
                raw, student, teacher, value)

    def take_stats(self) -> Dict[str, Dict[str, torch.Tensor]]:
        """Pair -> its statistics (name -> 0-d tensor, see
        :func:`feature_stats_tensors`) of the last ``loss()`` with
        ``collect_stats``; cleared."""
        stats, self._stats = self._stats, {}
        return stats
