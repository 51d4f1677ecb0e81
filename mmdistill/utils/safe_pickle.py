"""Weights-only ``torch.load`` on every torch >= 2.0, with one allowlist.

A checkpoint is a pickle, and unpickling can run code. mmdistill reads every
checkpoint (teacher, student, ``load_from``, ``--resume``, the tools, every
mmengine URL scheme) through :func:`safe_torch_load`, which allows exactly:

* what torch's weights-only unpickler allows (tensors, storages, dtypes,
  ``torch.Size``, ``OrderedDict`` and plain containers);
* what mmengine runner checkpoints add: ``HistoryBuffer`` (the message hub's
  logs), numpy arrays, scalars and dtypes, and ``getattr`` reduced to
  ``HistoryBuffer``'s statistics methods (how ``HistoryBuffer`` pickles
  them).

Two backends apply that one allowlist:

* torch >= 2.6 (``add_safe_globals`` with ``(callable, name)`` entries):
  torch's own weights-only unpickler, with the allowlist added to torch's.
  ``torch.load`` anywhere in the process (mmdet's tools, user code) then
  reads runner checkpoints too.
* older torch (2.1, the OpenMMLab install guide's):
  :class:`RestrictedUnpickler`, passed to ``torch.load`` as its pickle
  module so that both the zip format and the legacy format (whose first
  records torch reads with the pickle module's ``load``) go through it. It
  refuses any global outside the allowlist, and its BUILD opcode
  (``__setstate__``/attribute setting) only acts on instances of the few
  allowed data classes, never on a function or class.

Anything else in a file is refused with :class:`UnsafeCheckpointError`.
"""
import collections
import io
import os
import pickle
import re
import types
from collections import OrderedDict
from typing import Any, Dict, Optional, Tuple

import torch


class UnsafeCheckpointError(pickle.UnpicklingError):
    """The file holds an object a checkpoint must not hold (it could run
    code when loaded); nothing of it was executed."""


def _torch_version() -> Tuple[int, int]:
    major, minor = re.match(r'(\d+)\.(\d+)', torch.__version__).groups()
    return int(major), int(minor)


#: torch's weights-only unpickler takes ``(callable, name)`` allowlist
#: entries (needed for the ``getattr`` shim) from 2.6 on.
TORCH_ALLOWLIST = (_torch_version() >= (2, 6)
                   and hasattr(torch.serialization, 'add_safe_globals'))


def history_buffer_getattr(obj: Any, name: str) -> Any:
    """``getattr`` as seen by the unpickler: only ``HistoryBuffer``'s
    statistics methods can be reached through it."""
    from mmengine.logging import HistoryBuffer
    methods = set(HistoryBuffer._statistics_methods) | {
        'min', 'max', 'current', 'mean'}
    if obj is HistoryBuffer and isinstance(name, str) and name in methods:
        return getattr(HistoryBuffer, name)
    raise UnsafeCheckpointError(
        f'getattr({obj!r}, {name!r}) is not allowed in a checkpoint')


def latin1_encode(text: Any, encoding: str = 'latin1') -> bytes:
    """``_codecs.encode`` as seen by the unpickler: protocol 2 pickles
    ``bytes`` (numpy array data) as ``_codecs.encode(str, 'latin1')``; only
    that is allowed."""
    if not isinstance(text, str) or encoding not in ('latin1', 'latin-1'):
        raise UnsafeCheckpointError(
            '_codecs.encode is allowed in a checkpoint only to turn a str '
            'into latin-1 bytes')
    return text.encode('latin1')


def _numpy_globals() -> Dict[str, Any]:
    """numpy objects in runner checkpoints, under the names numpy 1.x
    (``numpy.core``) and 2.x (``numpy._core``) pickle them with, so a file
    written with either loads with either."""
    import numpy as np
    try:  # numpy >= 2
        from numpy._core import multiarray
    except ImportError:  # numpy 1.x
        from numpy.core import multiarray
    out = {}
    for module in ('numpy.core.multiarray', 'numpy._core.multiarray'):
        out[f'{module}._reconstruct'] = multiarray._reconstruct
        out[f'{module}.scalar'] = multiarray.scalar
    out['numpy.ndarray'] = np.ndarray
    out['_codecs.encode'] = latin1_encode
    out['numpy.dtype'] = np.dtype
    dtypes = getattr(np, 'dtypes', None)  # numpy >= 1.25
    if dtypes is not None:
        for name in dir(dtypes):
            if name.endswith('DType'):
                out[f'numpy.dtypes.{name}'] = getattr(dtypes, name)
    for scalar in (np.bool_, np.float16, np.float32, np.float64, np.int8,
                   np.int16, np.int32, np.int64, np.uint8, np.uint16,
                   np.uint32, np.uint64):
        out[f'numpy.{scalar.__name__}'] = scalar
    return out


def _torch_globals() -> Dict[str, Any]:
    """What torch's own weights-only unpickler allows (its 2.13 list, as far
    as the running torch has the objects)."""
    out = {
        'collections.OrderedDict': OrderedDict,
        # mmdet runner checkpoints hold a Counter (dataset statistics)
        'collections.Counter': collections.Counter,
        'builtins.set': set,
        'builtins.bytearray': bytearray,
        'builtins.complex': complex,
        'torch.nn.parameter.Parameter': torch.nn.Parameter,
        'torch.Size': torch.Size,
        'torch.Tensor': torch.Tensor,
        'torch._tensor._rebuild_from_type_v2':
        torch._tensor._rebuild_from_type_v2,
    }
    layout = getattr(torch.serialization, '_get_layout', None)
    if layout is not None:
        out['torch.serialization._get_layout'] = layout
    for value in vars(torch).values():
        if isinstance(value, (torch.dtype, torch.qscheme)):
            out[str(value)] = value
    for cls in list(torch._tensor_classes) + list(torch._storage_classes):
        out[f'{cls.__module__}.{cls.__name__}'] = cls
    for name in ('_rebuild_parameter', '_rebuild_parameter_with_state',
                 '_rebuild_tensor', '_rebuild_tensor_v2',
                 '_rebuild_tensor_v3', '_rebuild_sparse_tensor',
                 '_rebuild_meta_tensor_no_storage', '_rebuild_nested_tensor',
                 '_rebuild_device_tensor_from_numpy',
                 '_rebuild_device_tensor_from_cpu_tensor', '_rebuild_qtensor',
                 '_rebuild_wrapper_subclass'):
        fn = getattr(torch._utils, name, None)
        if fn is not None:
            out[f'torch._utils.{name}'] = fn
    out['torch.device'] = torch.device
    return out


def mmengine_globals() -> Dict[str, Any]:
    """The objects mmengine runner checkpoints hold beyond tensors, by the
    ``module.name`` under which a pickle refers to them."""
    from mmengine.logging import HistoryBuffer
    out = _numpy_globals()
    out['mmengine.logging.history_buffer.HistoryBuffer'] = HistoryBuffer
    out['builtins.getattr'] = history_buffer_getattr
    out['__builtin__.getattr'] = history_buffer_getattr
    return out


def _build_targets() -> tuple:
    """Types whose instances BUILD may set state on."""
    import numpy as np
    from mmengine.logging import HistoryBuffer
    return (HistoryBuffer, np.ndarray, np.dtype, np.generic, OrderedDict,
            dict, list, torch.Tensor)


class RestrictedUnpickler(pickle._Unpickler):
    """A pickle unpickler that resolves only allowlisted globals.

    Based on the pure-Python unpickler so that BUILD can be checked too:
    without that, a file could set attributes (``__defaults__``,
    ``__code__``) of an allowed function or class.
    """

    _allowed: Optional[Dict[str, Any]] = None
    dispatch = dict(pickle._Unpickler.dispatch)

    @classmethod
    def allowed(cls) -> Dict[str, Any]:
        if cls._allowed is None:
            allowed = _torch_globals()
            allowed.update(mmengine_globals())
            cls._allowed = allowed
        return cls._allowed

    def find_class(self, module: str, name: str) -> Any:
        key = f'{module}.{name}'
        value = self.allowed().get(key)
        if value is None:
            raise UnsafeCheckpointError(
                f'it holds {key}, which is not allowed in a checkpoint')
        return value

    def load_build(self) -> None:
        inst = self.stack[-2]  # below the state BUILD pops
        if not isinstance(inst, _build_targets()):
            raise UnsafeCheckpointError(
                f'it sets the state of a {type(inst).__name__}, which is not '
                'allowed in a checkpoint')
        pickle._Unpickler.load_build(self)

    dispatch[pickle.BUILD[0]] = load_build

    def persistent_load(self, pid: Any) -> Any:
        raise pickle.UnpicklingError(
            'persistent id outside a torch checkpoint')


def _restricted_load(file, **kwargs) -> Any:
    return RestrictedUnpickler(file, **kwargs).load()


#: the ``pickle_module`` handed to ``torch.load`` on torch < 2.6
restricted_pickle = types.ModuleType('mmdistill_restricted_pickle')
restricted_pickle.Unpickler = RestrictedUnpickler
restricted_pickle.load = _restricted_load
restricted_pickle.UnpicklingError = pickle.UnpicklingError
restricted_pickle.__name__ = 'mmdistill_restricted_pickle'

_registered = False


def register_torch_allowlist() -> None:
    """Add the mmengine objects to torch's weights-only allowlist (torch >=
    2.6; a no-op before). Safe to call several times."""
    global _registered
    if _registered or not TORCH_ALLOWLIST:
        return
    # (object, name) entries: each name a pickle may use, including the
    # numpy 1.x and 2.x spellings of the same object
    torch.serialization.add_safe_globals(
        [(value, key) for key, value in mmengine_globals().items()])
    _registered = True


_UNSAFE_GLOBAL = re.compile(
    r'(?:Unsupported global: GLOBAL|Unsupported class|GLOBAL)\s+([\w.]+)')
_BUILD_TARGET = re.compile(r"Can only build .* but got <class '([\w.]+)'>")


def _weights_only_refusal(message: str) -> Optional[str]:
    """What torch's weights-only unpickler refused, worded as the
    restricted unpickler words it; None when the message names no object
    (an opcode it does not read: a corrupt file, or another kind of
    pickle)."""
    found = _UNSAFE_GLOBAL.search(message)
    if found or 'getattr(' in message:
        name = found.group(1) if found else 'getattr'
        return f'it holds {name}, which is not allowed in a checkpoint'
    found = _BUILD_TARGET.search(message)
    if found:
        return (f'it sets the state of a {found.group(1)}, which is not '
                'allowed in a checkpoint')
    return None


def _position(file) -> Optional[int]:
    """Where a file object's stream is (what torch reads from); 0 for a
    path or bytes; None when it cannot be told (not seekable)."""
    if isinstance(file, (str, bytes, bytearray, os.PathLike)):
        return 0
    try:
        return file.tell()
    except (AttributeError, OSError, ValueError):
        return None


def _rewind(file, position: Optional[int]) -> bool:
    """Put ``file`` back at ``position`` to read it again; whether it
    could be."""
    if position is None:
        return False
    if isinstance(file, (str, bytes, bytearray, os.PathLike)):
        return True
    try:
        file.seek(position)
        return True
    except (AttributeError, OSError, ValueError):
        return False


def safe_torch_load(file, map_location=None, backend: Optional[str] = None
                    ) -> Any:
    """``torch.load`` that refuses anything outside the allowlist.

    Args:
        file (str | file-like): What to read.
        map_location: As for ``torch.load``.
        backend (str, optional): ``'torch'`` (torch's weights-only
            unpickler, torch >= 2.6) or ``'restricted'``
            (:class:`RestrictedUnpickler`, any torch). Defaults to the
            first on torch >= 2.6, else the second.

    Raises:
        UnsafeCheckpointError: The file holds an object outside the
            allowlist.
        Exception: Whatever torch raises for an unreadable file (see
            :func:`mmdistill.utils.checkpoint.read_checkpoint` for the
            message users get).
    """
    backend = backend or ('torch' if TORCH_ALLOWLIST else 'restricted')
    if backend == 'torch':
        register_torch_allowlist()
        start = _position(file)
        try:
            return torch.load(file, map_location=map_location,
                              weights_only=True)
        except pickle.UnpicklingError as err:
            refusal = _weights_only_refusal(str(err))
            if refusal:
                raise UnsafeCheckpointError(refusal) from None
            if ('WeightsUnpickler error' not in str(err)
                    or not _rewind(file, start)):
                raise
            # an opcode torch's unpickler does not read (protocol 0
            # strings, INST, FRAME...): the restricted one reads every
            # opcode, against the same allowlist, so the file gets the
            # answer it gets on torch < 2.6 (refused naming what it holds,
            # loaded, or unreadable)
            backend = 'restricted'
    if backend != 'restricted':
        raise ValueError(f'backend must be torch or restricted, not '
                         f'{backend!r}')
    if isinstance(file, (bytes, bytearray)):
        file = io.BytesIO(file)
    return torch.load(file, map_location=map_location,
                      pickle_module=restricted_pickle, weights_only=False)
