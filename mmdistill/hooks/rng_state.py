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
    process of a distributed run (gathered on all ranks; each rank gets its
    own back).

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

    With one process, ``num_workers=0`` and ``randomness=dict(seed=...)``, a
    run that is killed and resumed ends with bit-identical weights (on the
    CPU; tested). What still differs:

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

    Example::

        custom_hooks = [
            dict(type='mmdistill.StudentCheckpointHook'),
            dict(type='mmdistill.RNGStateHook'),
        ]
    """
    # Last in every stage: the states are taken after, and restored after,
    # every other hook of the stage.
    priority = 'LOWEST'

    def __init__(self) -> None:
        self._before_val: Optional[Dict[str, Any]] = None
        self._loaded: Optional[dict] = None

    # ------------------------------------------------------------- saving
    def before_val(self, runner) -> None:
        self._before_val = get_rng_state()

    def after_val(self, runner) -> None:
        if self._before_val is not None:
            set_rng_state(self._before_val)
            self._before_val = None

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        # Every rank saves (mmengine's CheckpointHook calls save_checkpoint
        # on all of them), so the gather below is collective.
        state = self._before_val or get_rng_state()
        _, world_size = get_dist_info()
        ranks = (all_gather_object(state)
                 if is_distributed() and world_size > 1 else [state])
        checkpoint[RNG_KEY] = dict(world_size=len(ranks), ranks=ranks)

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
        if state['world_size'] != world_size:
            print_log(
                f'RNGStateHook: the checkpoint holds the generator states of '
                f'{state["world_size"]} process(es), this run has '
                f'{world_size}; they are not restored and the resumed run '
                'is not identical to an uninterrupted one.',
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
