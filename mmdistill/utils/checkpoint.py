"""Checkpoint I/O on torch >= 2.6, and the student-only export.

torch 2.6 made ``torch.load`` weights-only by default; mmengine's runner
checkpoints hold a few non-tensor objects (the message hub's
``HistoryBuffer`` and numpy scalars/arrays), so ``--resume`` and
``load_from`` fail with ``UnpicklingError: Weights only load failed``.
Instead of turning weights-only off, :func:`allow_mmengine_checkpoints`

* adds exactly those types to torch's allowlist of safe globals, and
* makes mmengine's loader of local files (used by ``load_from``,
  ``--resume`` and ``load_checkpoint``) unpickle with torch's weights-only
  allowlist plus one thing torch cannot express: ``HistoryBuffer`` pickles its
  statistics methods as ``getattr(HistoryBuffer, 'mean')``, so ``getattr`` is
  accepted on that class and those names only.

Any other object in a file a user points at is still refused.
"""
import os
import os.path as osp
import pickle
import types
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


def _allowed_globals() -> Dict[str, Any]:
    """``'module.name' -> object`` that torch's weights-only load accepts,
    including what was added with ``add_safe_globals``."""
    from torch import _weights_only_unpickler as wou
    allowed = dict(wou._get_allowed_globals())
    allowed.update(wou._get_user_allowed_globals())
    return allowed


def _history_buffer_getattr(obj: Any, name: str) -> Any:
    from mmengine.logging import HistoryBuffer
    methods = set(HistoryBuffer._statistics_methods) | {
        'min', 'max', 'current', 'mean'}
    if obj is HistoryBuffer and name in methods:
        return getattr(obj, name)
    raise pickle.UnpicklingError(
        f'getattr({obj!r}, {name!r}) is not allowed in a checkpoint')


class _RestrictedUnpickler(pickle.Unpickler):
    """Resolves only torch's weights-only globals and HistoryBuffer's
    statistics methods."""

    def find_class(self, module: str, name: str) -> Any:
        if module in ('builtins', '__builtin__') and name == 'getattr':
            return _history_buffer_getattr
        allowed = _allowed_globals()
        for mod in (module, module.replace('numpy.core', 'numpy._core', 1)):
            if f'{mod}.{name}' in allowed:
                return allowed[f'{mod}.{name}']
        raise pickle.UnpicklingError(
            f'{module}.{name} is not allowed in a checkpoint (mmdistill '
            'loads checkpoints with torch\'s weights-only allowlist). If you '
            'trust this file, add the type with '
            'torch.serialization.add_safe_globals([...]) before loading.')


restricted_pickle = types.ModuleType('mmdistill_restricted_pickle')
restricted_pickle.Unpickler = _RestrictedUnpickler
restricted_pickle.load = pickle.load
restricted_pickle.__name__ = 'mmdistill_restricted_pickle'


def load_checkpoint_file(filename: str, map_location=None) -> Any:
    """``torch.load`` of a local runner checkpoint, restricted as described
    in the module docstring; a corrupt file gives a clear error."""
    filename = osp.expanduser(filename)
    if not osp.isfile(filename):
        raise FileNotFoundError(f'{filename} can not be found.')
    try:
        return torch.load(
            filename,
            map_location=map_location,
            pickle_module=restricted_pickle,
            weights_only=False)
    except pickle.UnpicklingError:
        raise
    except (RuntimeError, EOFError, OSError, ValueError) as err:
        raise RuntimeError(
            f'Cannot read the checkpoint {filename}: {err}. The file is '
            'truncated or corrupt (an interrupted save or copy?); use another '
            'checkpoint, e.g. the previous one in the work dir.') from err


def allow_mmengine_checkpoints() -> None:
    """Let mmengine runner checkpoints load on torch >= 2.6 (see the module
    docstring). Safe to call several times."""
    add_safe_globals = getattr(torch.serialization, 'add_safe_globals', None)
    if add_safe_globals is None:  # torch < 2.4 loads them anyway
        return
    from mmengine.logging import HistoryBuffer
    from mmengine.runner.checkpoint import CheckpointLoader
    add_safe_globals([HistoryBuffer] + _numpy_safe_globals())
    CheckpointLoader.register_scheme(prefixes='', force=True)(
        load_from_local)


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
