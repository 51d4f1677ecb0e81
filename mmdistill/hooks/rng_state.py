"""Random number generator states in the runner checkpoint, for an exact
resume."""
import logging
import random
from typing import Any, Dict, List, Optional

import numpy as np
import torch
from mmengine.dist import all_gather_object, get_dist_info, is_distributed
from mmengine.hooks import Hook
from mmengine.logging import print_log

from mmdistill.registry import HOOKS
from .utils import check_registered_once

#: key of the states in the runner checkpoint
RNG_KEY = 'rng_state'


def get_rng_state() -> Dict[str, Any]:
    """This process's python ``random``, numpy (global) and torch (CPU and
    every CUDA device) generator states, in types the weights-only reader
    accepts (plain ints, floats, lists, ``uint8`` tensors).

    Returns:
        dict: ``python``, ``numpy``, ``torch`` and ``cuda`` (a list, one
        state per device; empty without CUDA).
    """
    version, internal, gauss_next = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    cuda: List[torch.Tensor] = []
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        cuda = [s.clone() for s in torch.cuda.get_rng_state_all()]
    return dict(
        python=dict(
            version=int(version),
            state=[int(v) for v in internal],
            gauss_next=None if gauss_next is None else float(gauss_next)),
        numpy=dict(
            kind=str(kind),
            keys=[int(v) for v in keys],
            pos=int(pos),
            has_gauss=int(has_gauss),
            cached_gaussian=float(cached)),
        torch=torch.get_rng_state().clone(),
        cuda=cuda)


def set_rng_state(state: Dict[str, Any]) -> List[str]:
    """Restore what :func:`get_rng_state` returned.

    The CUDA states are restored when this process sees the same number of
    CUDA devices as the one that saved them.

    Args:
        state (dict): A state of :func:`get_rng_state`.

    Returns:
        list[str]: What could not be restored, for a message (empty when
        everything was).
    """
    python = state['python']
    random.setstate((python['version'], tuple(python['state']),
                     python['gauss_next']))
    numpy = state['numpy']
    np.random.set_state(
        (numpy['kind'], np.asarray(numpy['keys'], dtype=np.uint32),
         numpy['pos'], numpy['has_gauss'], numpy['cached_gaussian']))
    torch.set_rng_state(torch.as_tensor(state['torch'], dtype=torch.uint8))
    saved = list(state.get('cuda') or [])
    if not saved:
        return []
    here = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if len(saved) != here:
        return [f'the CUDA generators ({len(saved)} device(s) saved, '
                f'{here} here)']
    torch.cuda.set_rng_state_all(
        [torch.as_tensor(s, dtype=torch.uint8) for s in saved])
    return []


def checkpoint_due(runner, stage: str) -> bool:
    """Whether one of the runner's ``CheckpointHook`` s saves a checkpoint in
    this ``stage`` (``'after_train_iter'`` or ``'after_train_epoch'``), by
    the hook's own rule (``interval``, ``save_begin``, ``save_last``).

    mmengine's ``Runner.save_checkpoint`` runs on rank 0 only
    (``master_only``), so ``before_save_checkpoint`` cannot run collectives;
    a hook that must act on every process before a checkpoint (gather, or
    average) does it in the same stage, before ``CheckpointHook`` (priority
    VERY_LOW), when this says a save follows. Every process computes the
    same answer.
    """
    from mmengine.hooks import CheckpointHook
    for hook in runner.hooks:
        if not isinstance(hook, CheckpointHook):
            continue
        if stage == 'after_train_iter' and not hook.by_epoch:
            every = hook.every_n_train_iters(runner, hook.interval,
                                             hook.save_begin)
            last = hook.save_last and hook.is_last_train_iter(runner)
        elif stage == 'after_train_epoch' and hook.by_epoch:
            every = hook.every_n_epochs(runner, hook.interval,
                                        hook.save_begin)
            last = hook.save_last and hook.is_last_train_epoch(runner)
        else:
            continue
        if every or last:
            return True
    return False


def _gather(state: Dict[str, Any]) -> List[Dict[str, Any]]:
    """Every process's ``state``, in rank order (collective)."""
    return all_gather_object(state)


class _RestoreAfterSkip:
    """Stands in for ``IterBasedTrainLoop.dataloader_iterator`` on resume.

    mmengine's loop fetches (and thereby augments) ``skip`` batches to
    advance the data to where the checkpoint was saved; that consumes random
    numbers. This iterator passes those ``skip`` fetches through, then calls
    ``restore`` right before the first batch that is trained on, and puts the
    loop's own iterator back.
    """

    def __init__(self, loop, skip: int, restore) -> None:
        self.loop = loop
        self.inner = loop.dataloader_iterator
        self.skip = skip
        self.restore = restore

    def __iter__(self):
        return self

    def __next__(self):
        if self.skip > 0:
            self.skip -= 1
            return next(self.inner)
        self.loop.dataloader_iterator = self.inner
        self.restore()
        return next(self.inner)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


@HOOKS.register_module()
class RNGStateHook(Hook):
    """Save the random generator states in every runner checkpoint and
    restore them on resume, so that a resumed run continues exactly as the
    uninterrupted one would have.

    mmengine's checkpoints hold the weights, optimizer, schedulers and the
    data position, but not the generators: after ``--resume`` dropout
    (stock PSPNet's decode and auxiliary heads) and random augmentation
    (resize, crop, flip, photometric distortion) draw other numbers than the
    uninterrupted run would have, and the weights drift apart. This hook adds
    ``rng_state`` to the checkpoint: python ``random``, numpy's global
    generator and torch's CPU generator and every CUDA device's (``uint8``
    tensors and plain lists, which the weights-only reader loads), for every
    process of a distributed run (each rank gets its own back). mmengine
    writes checkpoints from rank 0 only, so the states are gathered from all
    processes in the stage in which ``CheckpointHook`` saves, before it
    (see :func:`checkpoint_due`), and before every validation (for
    ``save_best``): no collective in any other iteration.

    On resume the states are restored right before the first training batch
    is fetched: after mmengine's loop has advanced the dataloader past the
    batches already trained on (which draws random numbers of its own), so
    the first new batch is augmented, and the first forward draws its
    dropout masks, from exactly the saved states. A checkpoint is saved
    after an iteration (or epoch) and before the validation that may follow
    it, so validation is made neutral to the training stream: the states are
    taken before validation and put back after it, and a checkpoint written
    during validation (``save_best``) holds the states from before it. The
    training randomness therefore does not depend on when or whether
    validation runs. ``load_from`` without resume restores nothing.

    With ``num_workers=0`` and ``randomness=dict(seed=...)``, a run that is
    killed and resumed ends with bit-identical weights (on the CPU: tested
    with one process, measured with two over gloo). What still differs:

    * **Dataloader worker processes** (``num_workers > 0``): augmentation
      runs in the workers, whose generators are not in the checkpoint. Each
      worker is seeded when its DataLoader iterator starts (mmengine's
      ``worker_init_fn`` from ``randomness.seed``, the rank and the worker
      id; torch's base seed drawn from the main process), so after a resume
      the workers start from fresh seeds instead of where the
      uninterrupted run's workers were (with ``persistent_workers`` they
      would have continued across epochs). The data order is still exact
      (mmengine's samplers); the augmentation is reproducible from run to
      run but not guaranteed identical to the uninterrupted run's.
    * **cuDNN and other non-deterministic kernels**: ``cudnn_benchmark=True``
      and atomics in CUDA backward passes (``interpolate``, ``index_add``,
      ...) give different rounding from run to run, with or without a
      resume. ``randomness=dict(seed=..., deterministic=True)`` and
      ``env_cfg.cudnn_benchmark=False`` remove most of it.
    * **A different machine shape**: states saved by N processes are not
      restored into a run of M != N processes, nor CUDA states into a
      process with another number of devices (a warning says what was not
      restored).
    * Generators outside the global ones (a ``torch.Generator`` or
      ``np.random.default_rng`` held by user code) are not saved.

    Example (what ``configs/_base_/distill_runtime.py`` adds)::

        default_hooks = dict(
            student_checkpoint=dict(type='mmdistill.StudentCheckpointHook'),
            rng_state=dict(type='mmdistill.RNGStateHook'))
    """
    # After ParamSchedulerHook (LOW, registered first) and before
    # CheckpointHook (VERY_LOW): the states of every process are gathered in
    # the stage in which a checkpoint is saved, before the save.
    priority = 'LOW'

    def __init__(self) -> None:
        self._before_val: Optional[Dict[str, Any]] = None
        self._val_ranks: Optional[List[Dict[str, Any]]] = None
        self._ranks: Optional[List[Dict[str, Any]]] = None
        self._loaded: Optional[dict] = None

    def before_run(self, runner) -> None:
        check_registered_once(
            self, runner, 'save and restore the generators, and skip the '
            'batches already seen on resume, once more')

    # ------------------------------------------------------------- saving
    @staticmethod
    def _distributed() -> bool:
        return is_distributed() and get_dist_info()[1] > 1

    def _gather_if_due(self, runner, stage: str) -> None:
        # mmengine saves on rank 0 only (before_save_checkpoint included):
        # the other processes' states are gathered here, on all of them.
        self._ranks = None
        if self._distributed() and checkpoint_due(runner, stage):
            self._ranks = _gather(get_rng_state())

    def after_train_iter(self, runner, batch_idx, data_batch=None,
                         outputs=None) -> None:
        self._gather_if_due(runner, 'after_train_iter')

    def after_train_epoch(self, runner) -> None:
        self._gather_if_due(runner, 'after_train_epoch')

    def before_val(self, runner) -> None:
        self._before_val = get_rng_state()
        # a save_best checkpoint is written during validation
        self._val_ranks = _gather(
            self._before_val) if self._distributed() else None

    def after_val(self, runner) -> None:
        if self._before_val is not None:
            set_rng_state(self._before_val)
        self._before_val = self._val_ranks = None

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        _, world_size = get_dist_info()
        if self._before_val is not None:
            ranks = self._val_ranks or [self._before_val]
        else:
            ranks = self._ranks or [get_rng_state()]
        # with len(ranks) < world_size (a save outside CheckpointHook's
        # rule) a resume restores nothing, and says so
        checkpoint[RNG_KEY] = dict(world_size=world_size, ranks=ranks)

    # ---------------------------------------------------------- restoring
    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        meta = checkpoint.get('meta') or {}
        self._loaded = dict(
            state=checkpoint.get(RNG_KEY),
            iter=meta.get('iter'),
            epoch=meta.get('epoch'))

    def before_train_epoch(self, runner) -> None:
        loaded, self._loaded = self._loaded, None
        # A resumed run stands where the checkpoint was saved; load_from
        # (fine-tuning from a checkpoint) starts at iteration 0.
        if loaded is None or runner.iter == 0 or (
                loaded['iter'], loaded['epoch']) != (runner.iter,
                                                     runner.epoch):
            return
        state = loaded['state']
        if state is None:
            print_log(
                'RNGStateHook: the checkpoint holds no random generator '
                'states (saved without this hook); the resumed run draws '
                'other random numbers than the uninterrupted run.',
                logger='current',
                level=logging.WARNING)
            return
        rank, world_size = get_dist_info()
        if state['world_size'] != world_size or len(
                state['ranks']) != world_size:
            print_log(
                f'RNGStateHook: the checkpoint holds the generator states of '
                f'{len(state["ranks"])} of {state["world_size"]} '
                f'process(es), this run has {world_size}; they are not '
                'restored and the resumed run is not identical to an '
                'uninterrupted one.',
                logger='current',
                level=logging.WARNING)
            return
        mine = state['ranks'][rank]

        def restore() -> None:
            missing = set_rng_state(mine)
            print_log(
                'RNGStateHook: random generator states restored from the '
                'checkpoint' + (f' except {", ".join(missing)}'
                                if missing else '') + '.',
                logger='current',
                level=logging.WARNING if missing else logging.INFO)

        loop = runner.train_loop
        if hasattr(loop, 'dataloader_iterator') and runner.iter > 0:
            # IterBasedTrainLoop fetches runner.iter batches to skip the data
            # already trained on, after this stage and before the first
            # trained batch.
            loop.dataloader_iterator = _RestoreAfterSkip(
                loop, runner.iter, restore)
        else:
            # EpochBasedTrainLoop starts its dataloader right after this
            # stage.
            restore()
