"""Checkpoint I/O on torch >= 2.6, and the student-only export.

torch 2.6 made ``torch.load`` weights-only by default; mmengine's runner
checkpoints hold a few non-tensor objects, so ``--resume`` and ``load_from``
fail with ``UnpicklingError: Weights only load failed``. Instead of turning
weights-only off, :func:`allow_mmengine_checkpoints` adds to torch's own
allowlist exactly what those checkpoints hold:

* mmengine's ``HistoryBuffer`` (the message hub's logs) and numpy arrays,
  scalars and dtypes;
* ``HistoryBuffer`` pickles its statistics methods as
  ``getattr(HistoryBuffer, 'mean')``: ``getattr`` is allowed as a shim that
  answers only that class and those method names.

Loading stays in torch's weights-only unpickler (its checks on every opcode
apply), so any other object in a file a user points at is still refused.
"""
import os
import os.path as osp
import pickle
from collections import OrderedDict
from typing import Any, Dict, Mapping, Optional

import torch

STUDENT_PREFIX = 'student.'


def _numpy_safe_globals() -> list:
    import numpy as np
    try:  # numpy >= 2
        from numpy._core import multiarray
    except ImportError:  # pragma: no cover - numpy 1.x
        from numpy.core import multiarray
    safe = [multiarray._reconstruct, multiarray.scalar, np.ndarray, np.dtype]
    dtypes = getattr(np, 'dtypes', None)
    if dtypes is not None:
        safe += [getattr(dtypes, name) for name in dir(dtypes)
                 if name.endswith('DType')]
    # numpy scalar types appear as the argument of dtype(...) reconstructs.
    safe += [np.bool_, np.float16, np.float32, np.float64, np.int8, np.int16,
             np.int32, np.int64, np.uint8, np.uint16, np.uint32, np.uint64]
    return safe


def history_buffer_getattr(obj: Any, name: str) -> Any:
    """``getattr`` as seen by the unpickler: only ``HistoryBuffer``'s
    statistics methods can be reached through it."""
    from mmengine.logging import HistoryBuffer
    methods = set(HistoryBuffer._statistics_methods) | {
        'min', 'max', 'current', 'mean'}
    if obj is HistoryBuffer and isinstance(name, str) and name in methods:
        return getattr(HistoryBuffer, name)
    raise pickle.UnpicklingError(
        f'getattr({obj!r}, {name!r}) is not allowed in a checkpoint')


def allow_mmengine_checkpoints() -> None:
    """Let mmengine runner checkpoints load with torch's weights-only
    unpickler (see the module docstring). Safe to call several times."""
    add_safe_globals = getattr(torch.serialization, 'add_safe_globals', None)
    if add_safe_globals is None:  # torch < 2.4 loads them anyway
        return
    from mmengine.logging import HistoryBuffer
    from mmengine.runner.checkpoint import CheckpointLoader
    add_safe_globals([HistoryBuffer] + _numpy_safe_globals() + [
        (history_buffer_getattr, 'builtins.getattr'),
        (history_buffer_getattr, '__builtin__.getattr'),
    ])
    CheckpointLoader.register_scheme(prefixes='', force=True)(
        load_from_local)
    CheckpointLoader.register_scheme(
        prefixes=('http://', 'https://'), force=True)(load_from_http)


def load_checkpoint_file(filename: str, map_location=None) -> Any:
    """``torch.load`` of a local checkpoint, weights-only (with the allowlist
    above); a truncated or corrupt file gives an error that says so."""
    filename = osp.expanduser(filename)
    if not osp.isfile(filename):
        raise FileNotFoundError(f'{filename} can not be found.')
    try:
        return torch.load(filename, map_location=map_location,
                          weights_only=True)
    except pickle.UnpicklingError:
        raise
    except (RuntimeError, EOFError, OSError, ValueError) as err:
        raise RuntimeError(
            f'Cannot read the checkpoint {filename}: {err}. The file is '
            'truncated or corrupt (an interrupted save or copy?); use another '
            'checkpoint, e.g. the previous one in the work dir.') from err


def load_from_http(filename: str,
                   map_location=None,
                   model_dir: Optional[str] = None,
                   progress: bool = False) -> Any:
    """mmengine ``CheckpointLoader`` scheme for URLs: download into torch's
    hub cache (local rank 0 first), then load weights-only. (mmengine's own
    goes through ``torch.hub.load_state_dict_from_url``, which is not
    weights-only.)"""
    from urllib.parse import urlparse

    from mmengine.dist import get_dist_info
    model_dir = model_dir or osp.join(torch.hub.get_dir(), 'checkpoints')
    path = osp.join(model_dir, osp.basename(urlparse(filename).path))
    rank, world_size = get_dist_info()
    for turn in ((0, ) if world_size == 1 else (0, 1)):
        if (rank == 0) == (turn == 0) and not osp.exists(path):
            os.makedirs(model_dir, exist_ok=True)
            torch.hub.download_url_to_file(filename, path, progress=progress)
        if world_size > 1 and turn == 0:
            torch.distributed.barrier()
    return load_checkpoint_file(path, map_location)


def load_from_local(filename: str, map_location=None) -> Any:
    """mmengine ``CheckpointLoader`` scheme for local files (its log line
    reads "Loads checkpoint by local backend")."""
    return load_checkpoint_file(filename, map_location)


def _plain(value: Any) -> Any:
    """Convert numpy values and containers to plain Python types, so the
    export loads under ``torch.load(weights_only=True)`` without mmdistill."""
    try:
        import numpy as np
        if isinstance(value, np.ndarray):
            return value.tolist()
        if isinstance(value, np.generic):
            return value.item()
    except ImportError:  # pragma: no cover
        pass
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, tuple):
        return tuple(_plain(v) for v in value)
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return str(value)


def student_state_dict(state_dict: Mapping[str, Any]) -> 'OrderedDict':
    """The student's weights under plain mmdet/mmseg keys.

    Args:
        state_dict (Mapping): A distiller's state dict (keys ``student.*``,
            ``connectors.*``, ...), possibly wrapped with ``module.``.

    Returns:
        OrderedDict: ``student.`` keys with the prefix removed; connectors,
        distillation losses and the teacher are left out.
    """
    student = OrderedDict()
    for key, value in state_dict.items():
        if key.startswith('module.'):
            key = key[len('module.'):]
        if key.startswith(STUDENT_PREFIX):
            student[key[len(STUDENT_PREFIX):]] = value
    if not student:
        raise KeyError(
            'No "student." weights in this checkpoint: it is not a '
            'checkpoint of a mmdistill distiller.')
    return student


def free_path(path: str) -> str:
    """``path`` if nothing is there, else the first free ``stem-N.ext``."""
    if not osp.exists(path):
        return path
    stem, ext = osp.splitext(path)
    n = 1
    while osp.exists(f'{stem}-{n}{ext}'):
        n += 1
    return f'{stem}-{n}{ext}'


def save_student_checkpoint(state_dict: Mapping[str, torch.Tensor],
                            path: str,
                            dataset_meta: Optional[dict] = None,
                            meta: Optional[Dict[str, Any]] = None,
                            overwrite: bool = False) -> str:
    """Write a student-only checkpoint that plain mmdet/mmseg loads.

    The file holds ``state_dict`` (tensors on CPU, plain keys) and ``meta``
    with ``dataset_meta`` (read by ``init_detector`` / ``init_model``), all in
    types that ``torch.load(weights_only=True)`` accepts. It is written to a
    temporary file first and moved into place, so a crash never leaves half a
    file.

    Args:
        state_dict (Mapping): The student's weights (see
            :func:`student_state_dict`).
        path (str): Destination.
        dataset_meta (dict, optional): Classes, palette, ... of the dataset.
        meta (dict, optional): More metadata (source checkpoint, iteration).
        overwrite (bool): Replace an existing file. Defaults to False, in
            which case an existing file raises ``FileExistsError``.

    Returns:
        str: The path written.
    """
    if osp.exists(path) and not overwrite:
        raise FileExistsError(
            f'{path} exists; pass another output path, or overwrite=True '
            '(--force on the command line) to replace it.')
    meta = _plain(dict(meta or {}))
    if dataset_meta is not None:
        meta['dataset_meta'] = _plain(dict(dataset_meta))
    from mmdistill import __version__
    meta.setdefault('mmdistill_version', __version__)
    checkpoint = dict(
        meta=meta,
        state_dict=OrderedDict(
            (k, v.detach().cpu()) for k, v in state_dict.items()))
    os.makedirs(osp.dirname(osp.abspath(path)), exist_ok=True)
    tmp = f'{path}.tmp-{os.getpid()}'
    torch.save(checkpoint, tmp)
    os.replace(tmp, path)
    return path
