"""A schedule for the distillation losses: warm-up, decay, stop."""
import math
from typing import Optional, Sequence

from mmengine.hooks import Hook

from mmdistill.registry import HOOKS
from .utils import distiller_of


@HOOKS.register_module()
class DistillLossScheduleHook(Hook):
    """Multiply the distillation losses by a factor that follows a schedule.

    With ``t`` the iteration about to run (0-based; the epoch with
    ``by_epoch=True``)::

        factor(t) = 0                               if stop is set, t >= stop
                  = warmup(t) * decay(t)            otherwise
        warmup(t) = start + (1 - start) * t / warmup   for t < warmup, else 1
        decay(t)  = 1 before decay_begin; from decay_begin to decay_end it
                    goes from 1 to decay_to, linearly or along a half
                    cosine (``decay='cosine'``), and stays at decay_to after

    The factor applies to every pair, or to the pairs named in ``pairs``,
    after each loss's own ``loss_weight``. It is logged as
    ``distill_factor`` with the training losses, or, for a hook given
    ``pairs``, as ``distill_factor_<pairs>`` (e.g. ``distill_factor_stage4``),
    so that several hooks, one per group of pairs, log one factor each; a
    pair takes one schedule, and two hooks scheduling the same pair stop
    before training. While the factor of every
    pair is 0 (after ``stop``) the teacher does not run at all, and the
    student trains alone at its own speed; the connectors and loss modules
    then get zero gradients (so DDP without ``find_unused_parameters``
    works), which the optimizer's weight decay and momentum still act on.
    The factor depends only on ``t``, so a resumed run continues the
    schedule where it stopped. ``t`` counts training iterations, i.e.
    micro-batches when the optimizer wrapper accumulates gradients
    (``accumulative_counts``), not optimizer steps. ``by_epoch=True`` needs
    an epoch-based training loop.

    Example::

        custom_hooks = [
            dict(type='mmdistill.StudentCheckpointHook'),
            # distil from iteration 0 to 1000 with a linear warm-up, then
            # fine-tune the student alone
            dict(type='mmdistill.DistillLossScheduleHook', warmup=1000,
                 stop=30000),
        ]

    Args:
        warmup (int): length of the warm-up, in iterations (epochs with
            ``by_epoch``). Defaults to 0 (none).
        start (float): factor at the start of the warm-up (a factor, not
            an iteration: ``warmup`` is the length). Defaults to 0.
        decay_begin (int, optional): when the decay starts. Defaults to
            None (no decay).
        decay_end (int, optional): when the decay reaches ``decay_to``;
            required with ``decay_begin``.
        decay_to (float): factor at the end of the decay. Defaults to 0.
        decay (str): ``'linear'`` or ``'cosine'``. Defaults to ``'linear'``.
        stop (int, optional): from this iteration (epoch) on the factor is
            0 and the teacher is not run. Defaults to None.
        by_epoch (bool): count epochs instead of iterations. Defaults to
            False.
        pairs (list[str], optional): the distillation pairs scheduled, by
            their names in ``distill`` (a ``{0-4}`` group: all its levels)
            or by expanded names (``<name>_0``). Defaults to all.
    """
    priority = 'NORMAL'

    def __init__(self,
                 warmup: int = 0,
                 start: float = 0.0,
                 decay_begin: Optional[int] = None,
                 decay_end: Optional[int] = None,
                 decay_to: float = 0.0,
                 decay: str = 'linear',
                 stop: Optional[int] = None,
                 by_epoch: bool = False,
                 pairs: Optional[Sequence[str]] = None) -> None:
        if warmup < 0:
            raise ValueError(f'warmup must be >= 0, got {warmup}.')
        if (decay_begin is None) != (decay_end is None):
            raise ValueError(
                'decay_begin and decay_end go together: give both (e.g. '
                'decay_begin=20000, decay_end=40000) or neither.')
        if decay_begin is not None and decay_end <= decay_begin:
            raise ValueError(
                f'decay_end ({decay_end}) must come after decay_begin '
                f'({decay_begin}).')
        if decay not in ('linear', 'cosine'):
            raise ValueError(
                f"decay must be 'linear' or 'cosine', got {decay!r}.")
        if stop is not None and stop < 0:
            raise ValueError(f'stop must be >= 0, got {stop}.')
        for key, value in (('start', start), ('decay_to', decay_to)):
            if value < 0:
                raise ValueError(
                    f'{key} must be >= 0 (a negative factor would push the '
                    f'student away from the teacher), got {value}.')
        self.warmup = warmup
        self.start = start
        self.decay_begin = decay_begin
        self.decay_end = decay_end
        self.decay_to = decay_to
        self.decay = decay
        self.stop = stop
        self.by_epoch = by_epoch
        self.pairs = list(pairs) if pairs is not None else None
        self._scheduled = []

    def factor(self, t: int) -> float:
        """The factor at iteration (epoch) ``t``."""
        if self.stop is not None and t >= self.stop:
            return 0.0
        value = 1.0
        if t < self.warmup:
            value = self.start + (1.0 - self.start) * t / self.warmup
        if self.decay_begin is not None and t >= self.decay_begin:
            p = min(1.0, (t - self.decay_begin) /
                    (self.decay_end - self.decay_begin))
            if self.decay == 'cosine':
                p = (1.0 - math.cos(math.pi * p)) / 2.0
            value *= 1.0 + (self.decay_to - 1.0) * p
        return value

    def before_train(self, runner) -> None:
        from mmengine.runner import EpochBasedTrainLoop
        distiller = distiller_of(runner, 'DistillLossScheduleHook')
        if self.by_epoch and not isinstance(runner.train_loop,
                                            EpochBasedTrainLoop):
            raise ValueError(
                'DistillLossScheduleHook(by_epoch=True) counts epochs, but '
                f'the runner trains with {type(runner.train_loop).__name__},'
                ' whose epoch never advances: give warmup/decay/stop in '
                'iterations with by_epoch=False.')
        names = list(distiller.pairs)
        if self.pairs is None:
            self._scheduled = names
        else:
            self._scheduled = []
            for wanted in self.pairs:
                if wanted in distiller.pair_groups:
                    self._scheduled += distiller.pair_groups[wanted]
                elif wanted in names:
                    self._scheduled.append(wanted)
                else:
                    raise KeyError(
                        f'DistillLossScheduleHook: no distillation pair '
                        f'{wanted!r}; the pairs are {names}.')
        # one schedule per pair: a second one would silently override it
        # (owners left by another Runner's hooks on this model do not count)
        owners = distiller.controls.schedule_owners
        running = {id(hook) for hook in runner.hooks}
        for name in [n for n, owner in owners.items()
                     if owner not in running]:
            del owners[name]
        taken = sorted(name for name in self._scheduled
                       if owners.get(name, id(self)) != id(self))
        if taken:
            raise ValueError(
                f'Two DistillLossScheduleHooks schedule the pairs {taken}: '
                "a pair's factor would be whichever hook ran last. Give "
                'each hook its own pairs (pairs=[...]); a hook without '
                '`pairs` schedules every pair.')
        owners.update(dict.fromkeys(self._scheduled, id(self)))

    def _apply(self, runner, t: int) -> None:
        distiller = distiller_of(runner, 'DistillLossScheduleHook')
        value = self.factor(t)
        for name in self._scheduled:
            distiller.controls.loss_scales[name] = value
        runner.message_hub.update_scalar(f'train/{self.log_key}', value)

    @property
    def log_key(self) -> str:
        """``distill_factor``, or ``distill_factor_<pairs>`` for a hook
        that schedules the pairs it names."""
        if self.pairs is None:
            return 'distill_factor'
        return 'distill_factor_' + '_'.join(self.pairs)

    def before_train_epoch(self, runner) -> None:
        if self.by_epoch:
            self._apply(runner, runner.epoch)

    def before_train_iter(self, runner, batch_idx: int,
                          data_batch=None) -> None:
        if not self.by_epoch:
            self._apply(runner, runner.iter)
