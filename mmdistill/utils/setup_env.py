"""Config and process-group set-up shared by the command-line tools.

The OpenMMLab tools assume GPUs when they run several processes: NCCL,
``torch.cuda.set_device(LOCAL_RANK)``, ``DistributedDataParallel`` with
``device_ids=[LOCAL_RANK]`` and SyncBN in every mmseg config. On a machine
without CUDA each of these stops the run. :func:`prepare_config` and
:func:`init_distributed` make ``tools/dist_train.sh CONFIG N`` (and
``dist_test.sh``) run the same config on CPU processes with the ``gloo``
backend. With CUDA they change nothing.
"""
import copy
import os
from contextlib import contextmanager
from typing import Any, Iterator, Optional

import torch
from mmengine.config import Config, ConfigDict
from mmengine.hooks import Hook
from mmengine.logging import print_log

#: Norm layer types that synchronise statistics through CUDA collectives.
SYNC_NORMS = ('SyncBN', 'MMSyncBN', 'SyncBatchNorm')
#: Model wrappers that take ``device_ids`` (torch's DDP and mmengine's).
DDP_WRAPPERS = ('MMDistributedDataParallel', 'DistributedDataParallel')


def _log_once(message: str) -> None:
    """Log from the first process only (the process group does not exist
    yet; the launchers' RANK / SLURM_PROCID / OMPI rank tell)."""
    for name in ('RANK', 'SLURM_PROCID', 'OMPI_COMM_WORLD_RANK'):
        if name in os.environ:
            if os.environ[name] != '0':
                return
            break
    print_log(message, logger='current')


def _is_sync_norm(node: Any) -> bool:
    kind = node.get('type') if isinstance(node, dict) else None
    return isinstance(kind, str) and kind.split('.')[-1] in SYNC_NORMS


def _replace_sync_norms(node: Any) -> int:
    """Replace SyncBN configs in ``node`` (nested dicts/lists) by ``BN``;
    return how many were replaced."""
    count = 0
    if isinstance(node, dict):
        if _is_sync_norm(node):
            node['type'] = 'BN'
            count += 1
        for value in node.values():
            count += _replace_sync_norms(value)
    elif isinstance(node, (list, tuple)):
        for value in node:
            count += _replace_sync_norms(value)
    return count


def _cpu_distributed(cfg: Config) -> None:
    """Adjust a multi-process config for CPU processes."""
    # DDP refuses ``device_ids`` for a module on the CPU; mmengine passes
    # ``[LOCAL_RANK]`` unless the wrapper config says otherwise.
    wrapper = cfg.get('model_wrapper_cfg', None)
    if wrapper is None:
        cfg.model_wrapper_cfg = ConfigDict(
            type='MMDistributedDataParallel',
            broadcast_buffers=False,
            find_unused_parameters=cfg.get('find_unused_parameters', False))
        wrapper = cfg.model_wrapper_cfg
    kind = str(wrapper.get('type', 'MMDistributedDataParallel'))
    if kind.split('.')[-1] in DDP_WRAPPERS:
        wrapper['device_ids'] = None

    # torch's SyncBatchNorm trains on CUDA tensors only. Plain BN computes
    # each process's batch statistics; SyncBuffersHook averages the running
    # statistics over the processes before validation and at the end of
    # training, and the tools' SyncBuffersBeforeSaveHook before every
    # checkpoint, so that every process and every checkpoint hold the same
    # buffers.
    replaced = _replace_sync_norms(cfg.get('model', None))
    if cfg.get('sync_bn', None):
        _log_once(f'sync_bn={cfg.sync_bn!r} ignored: synchronised BN needs '
                  'CUDA.')
        cfg.sync_bn = None
        replaced += 1
    if replaced:
        hooks = list(cfg.get('custom_hooks', None) or [])
        if not any('SyncBuffersHook' in str(h.get('type', '')) for h in hooks):
            hooks.append(ConfigDict(type='SyncBuffersHook'))
            cfg.custom_hooks = hooks
        _log_once(f'No CUDA device: {replaced} SyncBN layer config(s) use '
                  'BN in each CPU process; SyncBuffersHook averages their '
                  'running statistics.')


#: the device types mmengine's AmpOptimWrapper trains on (it asserts one of
#: them is available)
AMP_DEVICES = ('cuda', 'npu', 'mlu', 'musa')


def amp_device_error(device: str, option: str,
                     teacher_dtype: Optional[str] = None) -> Optional[str]:
    """Why ``option`` (mixed precision with mmengine's ``AmpOptimWrapper``)
    cannot train on ``device`` (a device type: ``'cuda'``, ``'cpu'``, ...),
    or None when it can. ``teacher_dtype``, for a distiller, is how the
    tool's user sets ``model.teacher.dtype``: the cheaper teacher that works
    on the CPU. The check of ``tools/train.py --amp`` and
    ``tools/analysis/benchmark_overhead.py --amp``.

    Args:
        device (str): The device type.
        option (str): The option to name in the message.
        teacher_dtype (str, optional): How to set the teacher's dtype.

    Returns:
        str | None: The message, or None.
    """
    if device in AMP_DEVICES:
        return None
    message = (f'{option} needs a CUDA, NPU, MLU or MUSA device (mmengine\'s '
               f'AmpOptimWrapper trains only there); this runs on '
               f'{device!r}. Drop {option}')
    if device == 'cpu' and teacher_dtype:
        message += (f' on the CPU; for a cheaper teacher there, '
                    f'{teacher_dtype} runs the teacher in bfloat16 (CPU '
                    'autocast; the student and the losses stay float32)')
    return message + '.'


def set_dataloaders(cfg: Config, keys, persistent: bool,
                    no_pin_memory: bool = False,
                    no_persistent_workers: bool = False) -> None:
    """The dataloader settings mmpretrain's train.py/test.py apply, for the
    dataloaders ``keys`` of ``cfg``: for an mmpretrain config its defaults
    where the config sets nothing (``pin_memory=True``, ``default_collate``
    and, with ``persistent`` (train.py), ``persistent_workers=True`` when
    there are workers, which it needs); for any config, ``--no-pin-memory``
    and ``--no-persistent-workers``.

    Args:
        cfg (Config): The config, changed in place.
        keys (Iterable[str]): ``'train_dataloader'``, ... (missing ones
            are skipped).
        persistent (bool): Whether the mmpretrain defaults include
            ``persistent_workers`` (its train.py's do, its test.py's not).
        no_pin_memory (bool): ``pin_memory=False``.
        no_persistent_workers (bool): ``persistent_workers=False``.
    """
    mmpretrain = cfg.get('default_scope', None) == 'mmpretrain'
    for key in keys:
        loader = cfg.get(key, None)
        if loader is None:
            continue
        if mmpretrain:
            loader.setdefault('pin_memory', True)
            loader.setdefault('collate_fn', dict(type='default_collate'))
            if persistent and loader.get('num_workers', 0):
                loader.setdefault('persistent_workers', True)
        if no_pin_memory:
            loader['pin_memory'] = False
        if no_persistent_workers:
            loader['persistent_workers'] = False


def prepare_config(cfg: Config) -> Config:
    """Make a config runnable on the machine at hand (in place).

    Without a CUDA device:

    * the distributed backend becomes ``gloo`` (NCCL needs GPUs), so
      ``tools/dist_train.sh CONFIG 2`` works on a CPU box;
    * when several processes are launched (``cfg.launcher`` is not
      ``'none'``), ``model_wrapper_cfg`` gets ``device_ids=None`` (what DDP
      requires for a CPU module; ``find_unused_parameters`` and
      ``broadcast_buffers`` keep the values mmengine would use), SyncBN layer
      configs of the model become BN, and a ``SyncBuffersHook`` keeps the BN
      statistics equal on all processes (the tools add
      :class:`SyncBuffersBeforeSaveHook`, see :func:`sync_buffers_before_save`,
      so that checkpoints hold them too).

    With CUDA the config is returned unchanged. Calling it twice is harmless.

    Args:
        cfg (Config): A config whose ``launcher`` was set by the tool.

    Returns:
        Config: ``cfg``.
    """
    if torch.cuda.is_available():
        return cfg
    env_cfg = cfg.setdefault('env_cfg', ConfigDict())
    dist_cfg = env_cfg.setdefault('dist_cfg', ConfigDict())
    if dist_cfg.get('backend', 'nccl') == 'nccl':
        dist_cfg['backend'] = 'gloo'
    if cfg.get('launcher', 'none') != 'none':
        _cpu_distributed(cfg)
    return cfg


@contextmanager
def _without_cuda_set_device() -> Iterator[None]:
    """mmengine's ``init_dist`` calls ``torch.cuda.set_device(LOCAL_RANK)``
    for every launcher, which raises on a torch without CUDA; the process has
    no device to select, so the call is skipped for the duration."""
    original = torch.cuda.set_device
    torch.cuda.set_device = lambda device: None
    try:
        yield
    finally:
        torch.cuda.set_device = original


def init_distributed(cfg: Config) -> bool:
    """Start the process group of a multi-process CPU run.

    mmengine's ``Runner`` starts it itself unless one exists; on a machine
    without CUDA its ``init_dist`` fails at ``torch.cuda.set_device``, so the
    tools call this first. It reads the launcher's environment exactly as
    mmengine does (``RANK``/``WORLD_SIZE``/``MASTER_ADDR``/``MASTER_PORT``
    from torchrun, ``SLURM_*``, ``OMPI_*``) with ``env_cfg.dist_cfg``
    (backend, timeout). With CUDA, or with ``launcher='none'``, it does
    nothing and the Runner proceeds as usual.

    Args:
        cfg (Config): The prepared config (see :func:`prepare_config`).

    Returns:
        bool: Whether this call started the process group.
    """
    from mmengine.dist import init_dist, is_distributed
    launcher = cfg.get('launcher', 'none')
    if launcher == 'none' or is_distributed() or torch.cuda.is_available():
        return False
    dist_cfg = copy.deepcopy(
        dict(cfg.get('env_cfg', {}).get('dist_cfg', None) or {}))
    dist_cfg.setdefault('backend', 'gloo')
    with _without_cuda_set_device():
        init_dist(launcher, **dist_cfg)
    return True


class SyncBuffersBeforeSaveHook(Hook):
    """Average the model's buffers over the processes before every
    iteration checkpoint, so that the checkpoint holds what every process
    holds.

    mmengine's ``SyncBuffersHook`` averages the buffers (the BN running
    statistics of the CPU fallback for SyncBN, see :func:`prepare_config`)
    at the end of a training epoch, before ``CheckpointHook`` saves an
    epoch checkpoint, and before validation. An iteration-based
    ``CheckpointHook`` saves in ``after_train_iter``, before that: the runner
    checkpoint, and the student export made from it, held rank 0's own
    statistics while the processes went on with the average. mmengine
    writes checkpoints from rank 0 only (``before_save_checkpoint`` runs
    there alone), so this hook runs the same all-reduce on every process in
    ``after_train_iter``, before ``CheckpointHook`` (priority VERY_LOW), in
    the iterations where that hook saves
    (:func:`mmdistill.hooks.rng_state.checkpoint_due`); no collective in the
    other iterations.
    """
    priority = 'LOW'

    def after_train_iter(self, runner, batch_idx, data_batch=None,
                         outputs=None) -> None:
        from mmengine.dist import all_reduce_params, is_distributed

        from mmdistill.hooks.rng_state import checkpoint_due
        if is_distributed() and checkpoint_due(runner, 'after_train_iter'):
            all_reduce_params(runner.model.buffers(), op='mean')


def sync_buffers_before_save(runner) -> bool:
    """In a distributed run whose hooks include mmengine's
    ``SyncBuffersHook`` (the CPU fallback for SyncBN adds one), register
    :class:`SyncBuffersBeforeSaveHook` so that checkpoints hold the averaged
    buffers.

    Returns:
        bool: Whether the hook was registered.
    """
    from mmengine.dist import is_distributed
    from mmengine.hooks import SyncBuffersHook
    if not is_distributed() or not any(
            isinstance(h, SyncBuffersHook) for h in runner.hooks) or any(
                isinstance(h, SyncBuffersBeforeSaveHook)
                for h in runner.hooks):
        return False
    runner.register_hook(SyncBuffersBeforeSaveHook())
    return True


class RankZeroTestJsonHook(Hook):
    """mmengine's ``LoggerHook.after_test_epoch`` dumps the test metrics to
    ``<log_dir>/<timestamp>.json`` on every rank, each opening the shared
    file with 'w': the ranks' bytes overwrite one another and the file can
    end up as invalid JSON. On ranks other than 0 this hook makes the
    LoggerHook's test-epoch step log its line without writing the file;
    rank 0 writes it as before."""
    priority = 'LOWEST'

    def before_run(self, runner) -> None:
        from mmengine.dist import get_rank
        from mmengine.hooks import LoggerHook
        if get_rank() == 0:
            return

        def log_only(runner, metrics=None) -> None:
            _, text = runner.log_processor.get_log_after_epoch(
                runner, len(runner.test_dataloader), 'test',
                with_non_scalar=True)
            runner.logger.info(text)

        for hook in runner.hooks:
            if isinstance(hook, LoggerHook):
                hook.after_test_epoch = log_only


def rank_zero_test_json(runner) -> None:
    """Let only rank 0 write the test metrics json (see
    :class:`RankZeroTestJsonHook`); nothing outside distributed runs."""
    from mmengine.dist import is_distributed
    if is_distributed():
        runner.register_hook(RankZeroTestJsonHook(), 'LOWEST')


def finish_distributed() -> None:
    """Wait for every rank, then destroy the process group, so that no
    rank exits while gloo's threads still run (which aborts the process
    with "terminate called without an active exception")."""
    import torch.distributed as dist
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
