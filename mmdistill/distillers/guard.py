"""Stop a distillation that does not train, without syncing the forward.

The distillation forward never reads a value back to the host (on a GPU
that would stall the queue of kernels every step). Instead
:class:`DistillGuard` takes the values mmengine logs anyway, once per
iteration after the update:

* :meth:`DistillGuard.record` (from the distiller's ``parse_losses``, which
  mmengine's ``train_step`` and its DDP wrapper both call) stacks the
  student's own loss and each ``loss_distill_<pair>`` into one tensor and
  starts its copy to the host (asynchronous on CUDA);
* :meth:`DistillGuard.check` reads that copy after the update (the
  distiller's ``train_step``; under DDP, whose wrapper does not call it, at
  the start of the next ``loss()``, by when mmengine's logging has
  synchronised) together with the gradient norm mmengine logged
  (``train/grad_norm``, present when ``optim_wrapper.clip_grad`` is set).
"""
import math
from collections import deque
from typing import Callable, Dict, Optional, Sequence

import torch

from mmdistill.utils.warn import warn

GUARD_ACTIONS = ('stop', 'warn', 'off')


class DistillGuardError(FloatingPointError):
    """A distillation that would not train: a non-finite loss or gradient
    norm, or a distillation term out of all proportion to the task loss."""


class _Record:
    __slots__ = ('step', 'num_task', 'keys', 'values', 'event', 'amp')

    def __init__(self, step, num_task, keys, values, event, amp):
        self.step = step
        self.num_task = num_task  # the first values are the task losses
        self.keys = keys
        self.values = values
        self.event = event
        self.amp = amp


class DistillGuard:
    """Checks every training iteration that distillation trains the student.

    Args:
        action (str): ``'stop'`` (default): raise :class:`DistillGuardError`
            naming the pair and the fix; ``'warn'``: log the same message
            once per pair and problem and go on; ``'off'``: no check.
        max_loss_ratio (float): During the first ``check_iters`` iterations,
            a distillation term larger than this many times the student's
            own (task) losses is a misconfigured weight (1e30 instead of
            1e-3...). Defaults to 1e4. ``None`` or 0 turns this check off.
        check_iters (int): How many first iterations the ratio is checked
            for. Defaults to 10.
        amp_patience (int): Under AMP the loss scaler skips steps with
            non-finite gradients while it lowers its scale, which is normal
            now and then: stop only after this many consecutive iterations
            with a non-finite gradient norm. Defaults to 20. In float32 the
            first one stops.
    """

    def __init__(self,
                 action: str = 'stop',
                 max_loss_ratio: Optional[float] = 1e4,
                 check_iters: int = 10,
                 amp_patience: int = 20) -> None:
        if action not in GUARD_ACTIONS:
            raise ValueError(
                f"guard.action must be one of {GUARD_ACTIONS}, got {action!r}"
                ": 'stop' (default) raises, 'warn' only logs, 'off' skips "
                'the checks.')
        if max_loss_ratio is not None and not max_loss_ratio >= 0:
            raise ValueError('guard.max_loss_ratio must be >= 0 (0 or None: '
                             f'no ratio check), got {max_loss_ratio!r}.')
        if int(check_iters) < 0 or int(amp_patience) < 1:
            raise ValueError(
                'guard.check_iters must be >= 0 and guard.amp_patience >= 1, '
                f'got {check_iters!r} and {amp_patience!r}.')
        self.action = action
        self.max_loss_ratio = max_loss_ratio or None
        self.check_iters = int(check_iters)
        self.amp_patience = int(amp_patience)
        self.steps = 0
        self._pending: deque = deque()
        self._grad_hub = None
        self._grad_history = None  # the logged grad-norm history last seen
        self._grad_baseline_taken = False
        self._nonfinite_grads = 0
        self._reported: set = set()
        self._task_finite = True

    def __getstate__(self) -> dict:
        # copies (EMA, pickling) get no pending values: CUDA events and the
        # message hub do not copy
        state = dict(self.__dict__)
        state.update(_pending=deque(), _grad_hub=None, _grad_history=None,
                     _grad_baseline_taken=False)
        return state

    @classmethod
    def build(cls, cfg) -> 'DistillGuard':
        if isinstance(cfg, DistillGuard):
            return cfg
        if cfg is None:
            return cls()
        if not isinstance(cfg, dict):
            raise TypeError(
                "guard is a dict, e.g. guard=dict(action='warn'); got "
                f'{type(cfg).__name__}.')
        known = {'action', 'max_loss_ratio', 'check_iters', 'amp_patience'}
        unknown = set(cfg) - known
        if unknown:
            raise ValueError(f'guard: unknown keys {sorted(unknown)}; it '
                             f'takes {sorted(known)}.')
        return cls(**cfg)

    @property
    def enabled(self) -> bool:
        return self.action != 'off'

    @property
    def pending(self) -> bool:
        return bool(self._pending)

    # ------------------------------------------------------------- record
    def record(self, log_vars: Dict[str, torch.Tensor],
               distill_keys: Sequence[str], amp: bool = False) -> None:
        """Stack this iteration's task loss and distillation terms and start
        their copy to the host; no synchronisation."""
        if not self.enabled:
            return
        keys = [k for k in distill_keys if k in log_vars]
        task_keys = [
            k for k, v in log_vars.items()
            if 'loss' in k and k != 'loss' and k not in keys
            and isinstance(v, torch.Tensor)
        ]
        if not keys and not task_keys:
            return
        # one stack (views and no-op casts of the 0-d logged values), one
        # copy; the task losses are summed on the host
        values = torch.stack([
            log_vars[k].detach().float().reshape(())
            for k in task_keys + keys
        ])
        event = None
        if values.is_cuda:
            host = torch.empty(values.shape, dtype=values.dtype,
                               pin_memory=True)
            host.copy_(values, non_blocking=True)
            event = torch.cuda.Event()
            event.record()
            values = host
        if not self._grad_baseline_taken:
            # what was logged before this run's first update is not ours
            self._grad_baseline_taken = True
            self._grad_hub = _message_hub(None)
            self._grad_history = _grad_history(self._grad_hub)
        self._pending.append(
            _Record(self.steps, len(task_keys), keys, values, event, amp))
        self.steps += 1

    # -------------------------------------------------------------- check
    def check(self,
              message_hub=None,
              wait: bool = True,
              describe: Optional[Callable[[str], str]] = None,
              diagnose: Optional[Callable[..., Dict[str, str]]] = None,
              when: str = '') -> None:
        """Check the recorded iterations whose values reached the host.

        Args:
            message_hub: Where mmengine logged ``train/grad_norm`` (the
                optim wrapper's; the current instance when None).
            wait (bool): Wait for values still being copied (CUDA); when
                False they stay pending.
            describe (callable): pair name -> how to fix its weight (text).
            diagnose (callable): (pairs with a non-finite loss, whether the
                student's own losses were finite in that iteration) -> pair
                -> which side is at fault (text). Called only when one is
                found, so it may synchronise.
            when (str): Appended to the "at iteration" text.
        """
        if not self.enabled:
            self._pending.clear()
            return
        ready = []
        while self._pending:
            record = self._pending[0]
            if record.event is not None:
                if wait:
                    record.event.synchronize()
                elif not record.event.query():
                    break
            ready.append(self._pending.popleft())
        if not ready:
            return
        problems = []
        for i, record in enumerate(ready):
            latest = i == len(ready) - 1
            problems += self._problems(record, message_hub if latest else
                                       False, describe)
        if not problems:
            return
        nonfinite = [p for p in problems if p[0] == 'loss']
        sides = {}
        if nonfinite and diagnose is not None:
            try:
                sides = diagnose([p[1] for p in nonfinite],
                                 self._task_finite)
            except Exception as err:  # the report must not hide the problem
                sides = {p[1]: f'(could not tell which side: {err})'
                         for p in nonfinite}
        lines = []
        for kind, pair, text in problems:
            if kind == 'loss' and pair in sides:
                text += ' ' + sides[pair]
            lines.append((kind, pair, text))
        self._act(lines, when)

    def _problems(self, record: _Record, message_hub, describe) -> list:
        floats = record.values.tolist()
        task = (sum(floats[:record.num_task])
                if record.num_task else None)
        values = dict(zip(record.keys, floats[record.num_task:]))
        self._task_finite = task is None or math.isfinite(task)
        step = record.step + 1
        fix = describe or (lambda pair: 'lower its loss weight')
        out = []
        for key, value in values.items():
            pair = key[len('loss_distill_'):]
            if not math.isfinite(value):
                out.append(('loss', pair,
                            f'{key} is {value} at distillation iteration '
                            f'{step}.'))
        if task is not None and not math.isfinite(task):
            out.append((
                'task', None,
                f"the student's own losses sum to {task} at distillation "
                f'iteration {step}: the student diverged. Lower the learning '
                'rate or the distillation loss weights, or add gradient '
                'clipping (optim_wrapper.clip_grad=dict(max_norm=...)).'))
        if (self.max_loss_ratio and record.step < self.check_iters
                and task is not None and math.isfinite(task) and task != 0):
            for key, value in values.items():
                ratio = abs(value) / abs(task)
                if math.isfinite(value) and ratio > self.max_loss_ratio:
                    pair = key[len('loss_distill_'):]
                    out.append((
                        'ratio', pair,
                        f'{key} = {value:.4g} is {ratio:.3g} times the '
                        f"student's own losses ({task:.4g}) at distillation "
                        f'iteration {step}: it drowns the task (and may '
                        'overflow the gradients). '
                        f'{fix(pair)} by a factor of about {ratio:.0e} to '
                        'make them '
                        'comparable (the guard checks the first '
                        f'{self.check_iters} iterations for a ratio above '
                        f'{self.max_loss_ratio:g}: '
                        'guard.max_loss_ratio).'))
        if message_hub is not False:
            grad = self._fresh_grad_norm(message_hub)
            if grad is not None and not math.isfinite(grad):
                self._nonfinite_grads += 1
                patience = self.amp_patience if record.amp else 1
                if self._nonfinite_grads >= patience:
                    finite = {k: v for k, v in values.items()
                              if math.isfinite(v)}
                    largest = ''
                    if finite:
                        key = max(finite, key=lambda k: abs(finite[k]))
                        pair = key[len('loss_distill_'):]
                        largest = (
                            f' The largest distillation term is {key} = '
                            f'{finite[key]:.4g}'
                            + (f' ({abs(finite[key]) / abs(task):.3g} times '
                               "the student's own losses)"
                               if task and math.isfinite(task) else '')
                            + f'; if it is far larger than the others, '
                            f'{fix(pair)[0].lower()}{fix(pair)[1:]}.')
                    repeat = (f' in {self._nonfinite_grads} consecutive '
                              'iterations (AMP)' if record.amp else '')
                    out.append((
                        'grad', None,
                        f'the gradient norm is {grad}{repeat} at '
                        f'distillation iteration {step}: with clip_grad '
                        'every update is then zero or NaN, so the student '
                        f'does not train.{largest} Otherwise lower the '
                        'learning rate.'))
            elif grad is not None:
                self._nonfinite_grads = 0
        return out

    def _fresh_grad_norm(self, message_hub) -> Optional[float]:
        """The grad norm mmengine logged since the last check, if any."""
        message_hub = _message_hub(message_hub)
        history = _grad_history(message_hub)
        if message_hub is not self._grad_hub:
            # another hub than at the first record: its values may be stale
            self._grad_hub, self._grad_history = message_hub, history
            return None
        if history is None or history is self._grad_history:
            return None
        self._grad_history = history
        return float(history[-1]) if len(history) else None

    def _act(self, lines, when: str) -> None:
        text = '\n'.join(f'  - {text}' for _, _, text in lines)
        if self.action == 'stop':
            raise DistillGuardError(
                f'Distillation stopped{when}, the student would not train:\n'
                f"{text}\nTo only warn, set guard=dict(action='warn') in the "
                'distiller (model.guard).')
        new = [line for line in lines if line[:2] not in self._reported]
        if not new:
            return
        self._reported.update(line[:2] for line in new)
        message = ('Distillation may not train (guard, reported once per '
                   'pair and problem):\n' + '\n'.join(
                       f'  - {text}' for _, _, text in new))
        warn(message, stacklevel=3)


def _message_hub(message_hub):
    if message_hub is None:
        from mmengine.logging import MessageHub
        message_hub = MessageHub.get_current_instance()
    return message_hub


def _grad_history(message_hub):
    """The array of logged grad norms (mmengine replaces it on every
    update, so its identity tells a new value), or None."""
    buffer = message_hub.log_scalars.get('train/grad_norm')
    if buffer is None:
        return None
    return buffer.data[0]
