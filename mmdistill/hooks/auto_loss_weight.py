"""Loss weights measured on the run itself: ``loss_weight='auto'``."""
import os.path as osp
from typing import Dict, Optional

import torch
from mmengine.dist import all_reduce, is_main_process
from mmengine.hooks import Hook

from mmdistill.distillers.controls import LOSS_PREFIX, RAW_PREFIX
from mmdistill.registry import HOOKS
from mmdistill.utils.config import hook_name
from .utils import distiller_of

CHECKPOINT_KEY = 'auto_loss_weights'


def _value(x) -> float:
    return float(x.detach()) if isinstance(x, torch.Tensor) else float(x)


@HOOKS.register_module()
class AutoLossWeightHook(Hook):
    """Set the weight of every pair whose loss config says
    ``loss_weight='auto'`` from the run's own losses, then freeze it.

    For the first ``warmup_iters`` iterations such a pair's loss is computed
    and logged as ``distill_raw_<pair>`` (its loss with weight 1) but adds
    nothing to the optimised loss, so the student trains alone meanwhile.
    Then, with ``T`` the mean of the student's own losses (every logged
    ``loss*`` term except ``loss_distill_*``) and ``D`` the mean of the
    pair's unweighted loss over those iterations::

        weight = target_ratio * T / D

    so that the pair's loss starts at ``target_ratio`` times the student's
    own. The weight is then fixed for the rest of the run:

    * it is logged, and written into the run's dumped config (the
      ``work_dir`` copy of the config, and the config stored in later
      checkpoints; not the visualiser's copy, written when the run
      starts) as this hook's ``weights``: rerunning that config
      repeats the run exactly (the same warm-up, then those weights rather
      than the ones it measures again);
    * it is stored in each checkpoint and restored by ``--resume`` (not
      measured again); a run resumed before the end of the measurement
      measures again from the resumed iteration;
    * under DDP the sums are all-reduced before the division, so every rank
      sets the same weight.

    Example::

        model = dict(distill=dict(fpn=dict(
            ..., loss=dict(type='L2Loss', loss_weight='auto'))))
        custom_hooks = [dict(type='mmdistill.AutoLossWeightHook',
                             target_ratio=0.5, warmup_iters=100)]

    Args:
        target_ratio (float): Distillation loss / student loss wanted at
            the end of the measurement. Defaults to 1.0.
        warmup_iters (int): Iterations measured. Defaults to 100.
        weights (dict[str, float], optional): Pair -> the weight an earlier
            run set (its dumped config holds them): after the same warm-up
            these pairs take these weights instead of the measured ones.
            Defaults to None (measure them all).
    """
    priority = 'BELOW_NORMAL'

    def __init__(self, target_ratio: float = 1.0,
                 warmup_iters: int = 100,
                 weights: Optional[Dict[str, float]] = None) -> None:
        if not target_ratio > 0:
            raise ValueError(
                f'target_ratio must be > 0, got {target_ratio}.')
        if int(warmup_iters) != warmup_iters or warmup_iters < 1:
            raise ValueError(
                f'warmup_iters must be an integer >= 1, got {warmup_iters}.')
        weights = dict(weights or {})
        for name, weight in weights.items():
            if isinstance(weight, bool) or not isinstance(
                    weight, (int, float)) or not weight > 0:
                raise ValueError(
                    f'AutoLossWeightHook: weights[{name!r}] must be a '
                    f'number > 0, got {weight!r}.')
        self.target_ratio = float(target_ratio)
        self.warmup_iters = int(warmup_iters)
        self.weights = {name: float(w) for name, w in weights.items()}
        self._reset()

    def _reset(self) -> None:
        self._task = [0.0, 0]
        self._raw: Dict[str, list] = {}

    def before_train(self, runner) -> None:
        controls = distiller_of(runner, 'AutoLossWeightHook').controls
        if not controls.loss_weights:
            raise ValueError(
                'AutoLossWeightHook: no distillation pair has '
                "loss_weight='auto': set it in the pairs' loss configs or "
                'remove the hook from custom_hooks.')
        unknown = sorted(set(self.weights) - set(controls.loss_weights))
        if unknown:
            raise ValueError(
                f'AutoLossWeightHook: weights names {unknown}, which are not '
                "pairs with loss_weight='auto' (those are "
                f'{sorted(controls.loss_weights)}).')
        if controls.measuring and self.warmup_iters >= runner.max_iters:
            raise ValueError(
                f'AutoLossWeightHook: warmup_iters={self.warmup_iters} '
                'measures the losses over that many iterations before the '
                "'auto' pairs distill, but the run has only "
                f'{runner.max_iters} (max_iters): those pairs would never '
                'distill. Set warmup_iters to a few percent of the run (it '
                'needs to be below max_iters), or give the pairs a '
                'loss_weight number.')
        controls.auto_weights_hooked = True
        self._reset()
        if not controls.measuring:
            runner.logger.info(
                'AutoLossWeightHook: weights restored from the checkpoint: '
                + self._describe(controls.loss_weights))

    def before_train_iter(self, runner, batch_idx: int,
                          data_batch=None) -> None:
        # a pair's raw loss is logged while its weight is measured; the
        # message hub keeps a key's last value, which the logs would go on
        # printing (also after a resume, from the checkpoint's hub)
        controls = distiller_of(runner, 'AutoLossWeightHook').controls
        scalars = runner.message_hub.log_scalars
        for name, weight in controls.loss_weights.items():
            if weight is not None:
                scalars.pop(f'train/{RAW_PREFIX}{name}', None)

    def after_train_iter(self, runner, batch_idx: int, data_batch=None,
                         outputs: Optional[dict] = None) -> None:
        controls = distiller_of(runner, 'AutoLossWeightHook').controls
        if not controls.measuring or not outputs:
            return
        # these values are logged (read back to the host) by mmengine anyway
        task = [v for k, v in outputs.items() if 'loss' in k and k != 'loss'
                and not k.startswith(LOSS_PREFIX)]
        self._task[0] += sum(_value(v) for v in task)
        self._task[1] += 1
        for name, weight in controls.loss_weights.items():
            if weight is None and RAW_PREFIX + name in outputs:
                entry = self._raw.setdefault(name, [0.0, 0])
                entry[0] += _value(outputs[RAW_PREFIX + name])
                entry[1] += 1
        if runner.iter + 1 >= self.warmup_iters:
            self._freeze(runner, controls)

    def _freeze(self, runner, controls) -> None:
        names = [n for n, w in controls.loss_weights.items() if w is None]
        sums = [self._task[0], self._task[1]]
        for name in names:
            sums += self._raw.get(name, [0.0, 0])
        totals = torch.tensor(sums, dtype=torch.float64)
        all_reduce(totals)  # a no-op outside a distributed run
        task = float(totals[0] / totals[1]) if totals[1] else 0.0
        chosen = {}
        for i, name in enumerate(names):
            raw_sum, count = (float(v) for v in totals[2 + 2 * i:4 + 2 * i])
            if not count:
                continue  # the pair did not run (scheduled off): wait
            raw = raw_sum / count
            if name in self.weights:  # set by an earlier run: repeated
                chosen[name] = self.weights[name]
                continue
            if not raw > 0 or not task > 0:
                raise ValueError(
                    f'AutoLossWeightHook: pair {name!r} measured a mean '
                    f'distillation loss of {raw:g} against a student loss '
                    f'of {task:g} over {int(count)} iterations; a weight '
                    'cannot be derived from that: give '
                    f'{self._config_path(runner, name)}.loss_weight as a '
                    'number.')
            chosen[name] = self.target_ratio * task / raw
        controls.loss_weights.update(chosen)
        self._reset()
        if not chosen:
            return
        measured = {n: w for n, w in chosen.items() if n not in self.weights}
        given = {n: w for n, w in chosen.items() if n in self.weights}
        if measured:
            runner.logger.info(
                f'AutoLossWeightHook: over {self.warmup_iters} iterations '
                f'the student loss averaged {task:.4g}; weights for '
                f'distillation / student = {self.target_ratio:g}: '
                + self._describe(measured))
        if given:
            runner.logger.info(
                f'AutoLossWeightHook: after the {self.warmup_iters}-iteration'
                ' warm-up, the weights the config gives (weights=..., set by '
                'an earlier run): ' + self._describe(given))
        self._write_config(runner, chosen)

    @staticmethod
    def _describe(weights: Dict[str, Optional[float]]) -> str:
        return ', '.join(f'{name}: loss_weight={w:.6g}'
                         for name, w in weights.items() if w is not None)

    @staticmethod
    def _config_path(runner, name: str) -> str:
        return distiller_of(runner, 'AutoLossWeightHook').pairs[
            name].config_path('loss')

    def _write_config(self, runner, chosen: Dict[str, float]) -> None:
        """Put the numbers into this hook's ``weights`` in ``runner.cfg``
        (stored in later checkpoints) and rewrite the config mmengine dumped
        into the work dir with them."""
        listed = list(runner.cfg.get('custom_hooks') or []) + list(
            (runner.cfg.get('default_hooks') or {}).values())
        entries = [h for h in listed if isinstance(h, dict)
                   and hook_name(h) == type(self).__name__]
        if len(entries) != 1:
            runner.logger.warning(
                'AutoLossWeightHook: the config does not list this hook once '
                '(custom_hooks, default_hooks), so the weights are not '
                'written into it.')
            return
        weights = dict(entries[0].get('weights') or {})
        weights.update((n, float(w)) for n, w in chosen.items())
        entries[0]['weights'] = weights
        if is_main_process():
            name = osp.basename(runner.cfg.filename) \
                if runner.cfg.filename else f'{runner.timestamp}.py'
            runner.cfg.dump(osp.join(runner.work_dir, name))

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        controls = distiller_of(runner, 'AutoLossWeightHook').controls
        weights = {n: w for n, w in controls.loss_weights.items()
                   if w is not None}
        if weights:
            checkpoint[CHECKPOINT_KEY] = weights

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        weights = checkpoint.get(CHECKPOINT_KEY)
        if not weights:
            return
        controls = distiller_of(runner, 'AutoLossWeightHook').controls
        for name, weight in weights.items():
            if name in controls.loss_weights:
                controls.loss_weights[name] = float(weight)
