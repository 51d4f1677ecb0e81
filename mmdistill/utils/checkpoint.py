"""Checkpoint I/O: one reader, one loader, the student-only export.

Every checkpoint mmdistill touches is read by :func:`read_checkpoint`:

* weights-only on every torch >= 2.0 (see :mod:`.safe_pickle`: torch's own
  allowlist on torch >= 2.6, a restricted unpickler before), with exactly
  the objects mmengine runner checkpoints hold added;
* through mmengine's ``CheckpointLoader``, whose schemes (local files,
  ``http(s)://``, ``torchvision://``/``modelzoo://``, ``open-mmlab://``/
  ``openmmlab://``, ``mmcls://``, ``pavi://``, ``s3://``/``petrel://``) are
  replaced by :func:`install_safe_loading` with weights-only versions: a
  stock config's ``init_cfg=dict(type='Pretrained',
  checkpoint='torchvision://resnet50')``, ``load_from`` and ``--resume``
  all come here once ``mmdistill`` is imported;
* with one message per failure: a missing file, a download that failed
  (which URL, and how to pass a local file), a file that is not a readable
  checkpoint, a file holding objects a checkpoint must not hold. None of
  them advises turning weights-only off.

:func:`extract_state_dict` takes the weights out of any checkpoint (strips
DDP's ``module.``; a distiller's checkpoint gives its student) and
:func:`load_weights` loads them with a key-by-key report and the loaded
fraction counted by values, not keys.
"""
import io
import os
import os.path as osp
import urllib.error
from collections import OrderedDict
from typing import Any, Callable, Dict, Mapping, Optional, Sequence

import torch
import torch.nn as nn

from .safe_pickle import UnsafeCheckpointError, safe_torch_load
from .warn import warn

STUDENT_PREFIX = 'student.'
#: below this share of a model's values loaded, a checkpoint "does not fit"
MIN_LOADED_FRACTION = 0.1


class CheckpointError(RuntimeError):
    """A checkpoint could not be read (corrupt, truncated, not a torch
    checkpoint, or a download that failed)."""


def _first_line(err: BaseException) -> str:
    """A short, safe description of a reader's error (torch's own messages
    go on to advise ``weights_only=False``, which we never pass on)."""
    text = str(err).strip().splitlines()
    line = text[0] if text else ''
    if 'weights_only' in line or 'weights only' in line.lower():
        line = ''
    if len(line) > 240:  # at the end of a sentence, else marked as cut
        end = line.rfind('. ', 0, 240)
        line = line[:end + 1] if end > 0 else line[:240] + '...'
    return f'{type(err).__name__}: {line}' if line else type(err).__name__


def safe_read(source, name: str, map_location=None) -> Any:
    """Weights-only read of a local file or file-like ``source``; ``name``
    is how messages refer to it (the path or URL the user gave)."""
    try:
        return safe_torch_load(source, map_location=map_location)
    except UnsafeCheckpointError as err:
        raise UnsafeCheckpointError(
            f'Refusing to load {name}: {err}. mmdistill reads checkpoints '
            'weights-only (tensors, numbers, strings, containers, and the '
            'logs of mmengine runner checkpoints), because loading any other '
            'object can run code. Use a checkpoint that holds only weights, '
            'e.g. re-save its state_dict in a trusted environment.') from None
    except (FileNotFoundError, IsADirectoryError, PermissionError):
        raise
    except Exception as err:  # noqa: B902  any reader failure
        raise CheckpointError(
            f'{name} is not a readable checkpoint ({_first_line(err)}): it '
            'is truncated, corrupt or not a torch checkpoint (an interrupted '
            'save or copy?). Use another file, e.g. the previous checkpoint '
            'in the work dir.') from None


# --------------------------------------------------------------- schemes
def load_from_local(filename: str, map_location=None) -> Any:
    """Scheme for local files (mmengine logs "Loads checkpoint by local
    backend")."""
    filename = osp.expanduser(filename)
    if not osp.isfile(filename):
        raise FileNotFoundError(f'{filename} can not be found.')
    return safe_read(filename, filename, map_location)


def load_from_http(filename: str,
                   map_location=None,
                   model_dir: Optional[str] = None,
                   progress: bool = False) -> Any:
    """Scheme for URLs: download into torch's hub cache (local rank 0
    first, once), then read weights-only."""
    from urllib.parse import urlparse

    from mmengine.dist import get_dist_info
    model_dir = model_dir or osp.join(torch.hub.get_dir(), 'checkpoints')
    path = osp.join(model_dir, osp.basename(urlparse(filename).path))
    rank, world_size = get_dist_info()
    for turn in ((0, ) if world_size == 1 else (0, 1)):
        if (rank == 0) == (turn == 0) and not osp.exists(path):
            os.makedirs(model_dir, exist_ok=True)
            try:
                torch.hub.download_url_to_file(
                    filename, path, progress=progress)
            except (urllib.error.URLError, OSError, ValueError) as err:
                raise CheckpointError(
                    f'Could not download the checkpoint {filename} '
                    f'({_first_line(err)}). Without network, download it '
                    'elsewhere and give its local path instead of the URL, '
                    f'or put the file at {path}.') from None
        if world_size > 1 and turn == 0:
            torch.distributed.barrier()
    return safe_read(path, f'{filename} (cached at {path})', map_location)


def load_from_torchvision(filename: str, map_location=None) -> Any:
    """``torchvision://NAME`` (and the deprecated ``modelzoo://NAME``)."""
    from mmengine.runner.checkpoint import get_torchvision_models
    name = filename.split('://', 1)[1]
    urls = get_torchvision_models()
    if name not in urls:
        raise FileNotFoundError(
            f'{filename}: torchvision has no model {name!r}.')
    return load_from_http(urls[name], map_location=map_location)


def load_from_openmmlab(filename: str, map_location=None) -> Any:
    """``open-mmlab://NAME`` / ``openmmlab://NAME``: mmengine's model list
    (deprecated names mapped as mmengine maps them)."""
    from mmengine.runner.checkpoint import (_get_mmengine_home,
                                            get_deprecated_model_names,
                                            get_external_models)
    name = filename.split('://', 1)[1]
    name = get_deprecated_model_names().get(name, name)
    urls = get_external_models()
    if name not in urls:
        raise FileNotFoundError(
            f'{filename}: no OpenMMLab model {name!r} in mmengine\'s list.')
    url = urls[name]
    if url.startswith(('http://', 'https://')):
        return load_from_http(url, map_location=map_location)
    return load_from_local(osp.join(_get_mmengine_home(), url), map_location)


def load_from_mmcls(filename: str, map_location=None) -> Any:
    """``mmcls://NAME``: an mmcls model, its keys renamed as mmengine
    does."""
    from mmengine.runner.checkpoint import (_process_mmcls_checkpoint,
                                            get_mmcls_models)
    name = filename[len('mmcls://'):]
    urls = get_mmcls_models()
    if name not in urls:
        raise FileNotFoundError(f'{filename}: no mmcls model {name!r}.')
    return _process_mmcls_checkpoint(
        load_from_http(urls[name], map_location=map_location))


def load_from_pavi(filename: str, map_location=None) -> Any:
    """``pavi://``: downloaded with pavi's model cloud, read weights-only."""
    import tempfile
    try:
        from pavi import modelcloud
    except ImportError:
        raise ImportError(
            'Please install pavi to load checkpoint from modelcloud.')
    model = modelcloud.get(filename[len('pavi://'):])
    with tempfile.TemporaryDirectory() as tmp:
        path = osp.join(tmp, model.name)
        model.download(path)
        return safe_read(path, filename, map_location)


def load_from_ceph(filename: str, map_location=None,
                   backend: str = 'petrel') -> Any:
    """``s3://`` / ``petrel://``: bytes from mmengine's file backend, read
    weights-only."""
    from mmengine.fileio import get_file_backend
    file_backend = get_file_backend(
        filename, backend_args={'backend': backend})
    with io.BytesIO(file_backend.get(filename)) as buffer:
        return safe_read(buffer, filename, map_location)


#: prefix -> weights-only loader; covers every scheme mmengine registers
SAFE_SCHEMES: Dict[Any, Callable] = {
    '': load_from_local,
    ('http://', 'https://'): load_from_http,
    ('modelzoo://', 'torchvision://'): load_from_torchvision,
    ('open-mmlab://', 'openmmlab://'): load_from_openmmlab,
    'mmcls://': load_from_mmcls,
    'pavi://': load_from_pavi,
    (r'(\S+\:)?s3://', r'(\S+\:)?petrel://'): load_from_ceph,
}


def install_safe_loading() -> None:
    """Route every mmengine checkpoint scheme through the weights-only
    reader, and add mmengine's runner-checkpoint objects to torch's own
    allowlist (torch >= 2.6). Safe to call several times."""
    from mmengine.runner.checkpoint import CheckpointLoader

    from .safe_pickle import register_torch_allowlist
    register_torch_allowlist()
    for prefixes, loader in SAFE_SCHEMES.items():
        CheckpointLoader.register_scheme(prefixes, loader, force=True)


# ------------------------------------------------------------ read & load
def read_checkpoint(filename: str, map_location='cpu') -> Any:
    """Read a checkpoint given as a path or any mmengine scheme/URL,
    weights-only; errors as described in the module docstring."""
    from mmengine.runner.checkpoint import CheckpointLoader
    install_safe_loading()
    return CheckpointLoader.load_checkpoint(filename,
                                            map_location=map_location)


def extract_state_dict(checkpoint: Any, name: str = 'the checkpoint'
                       ) -> 'OrderedDict':
    """The weights of a checkpoint under the keys of the model they are for.

    Takes ``state_dict`` when there is one, strips DDP's ``module.``, and
    for a mmdistill distiller's checkpoint (``student.*`` keys) returns the
    student's weights under plain keys.

    Raises:
        CheckpointError: ``checkpoint`` holds no dict of tensors.
    """
    state = checkpoint
    if isinstance(checkpoint, Mapping):
        state = checkpoint.get('state_dict', checkpoint)
    if not isinstance(state, Mapping) or not state or not all(
            isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(
            f'{name} holds no state dict of tensors (a '
            f'{type(state).__name__}): it is not a model checkpoint.')
    state = OrderedDict(
        (k[len('module.'):] if k.startswith('module.') else k, v)
        for k, v in state.items())
    if any(k.startswith(STUDENT_PREFIX) for k in state):
        return student_state_dict(state)
    return state


def read_state_dict(filename: str) -> 'OrderedDict':
    """:func:`read_checkpoint` + :func:`extract_state_dict`."""
    return extract_state_dict(read_checkpoint(filename), repr(filename))


def _describe(keys: Sequence[str], limit: int = 25) -> str:
    shown = '\n'.join(f'    {k}' for k in keys[:limit])
    more = (f'\n    ... and {len(keys) - limit} more'
            if len(keys) > limit else '')
    return shown + more


class CheckpointMismatchError(ValueError):
    """A checkpoint does not fit the model it is loaded into."""


def state_fit(own: Mapping[str, torch.Tensor],
              state: Mapping[str, torch.Tensor]) -> Dict[str, Any]:
    """How a state dict fits a model's (``own``), counted in values
    (elements), not keys: BN counters and a few biases are many keys but
    almost no weights.

    Returns:
        dict: ``fits`` (keys of ``own`` that ``state`` has with the same
        shape), ``missing``/``unexpected``/``mismatched`` key lists,
        ``loaded``/``total`` value counts and ``fraction``, the loaded
        share of ``own``'s values.
    """
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    mismatched = [k for k in own if k in state
                  and tuple(state[k].shape) != tuple(own[k].shape)]
    fits = [k for k in own if k in state and k not in mismatched]
    total = sum(v.numel() for v in own.values())
    loaded = sum(own[k].numel() for k in fits)
    return dict(fits=fits, missing=missing, unexpected=unexpected,
                mismatched=mismatched, loaded=loaded, total=total,
                fraction=loaded / max(total, 1))


def fit_share(fit: Dict[str, Any], owner: str) -> str:
    """``'98.0% of the student weights (980 of 1000 values, 10 of 12
    tensors)'`` for a :func:`state_fit` result."""
    tensors = len(fit['fits']) + len(fit['missing']) + len(
        fit['mismatched'])
    return (f'{fit["fraction"]:.1%} of the {owner} weights ({fit["loaded"]} '
            f'of {fit["total"]} values, {len(fit["fits"])} of {tensors} '
            'tensors)')


def load_weights(model: nn.Module,
                 checkpoint: str,
                 strict: bool = True,
                 owner: str = 'teacher',
                 state: Optional[Mapping[str, torch.Tensor]] = None,
                 hint: str = '',
                 min_fraction: float = MIN_LOADED_FRACTION) -> Dict[str, Any]:
    """Load ``checkpoint`` into ``model`` with a key-by-key report.

    What fits is counted by values (elements), not keys: BN counters and a
    few biases are many keys but almost no weights. The loaded share is
    logged for every checkpoint.

    Args:
        model (nn.Module): What to load into.
        checkpoint (str): Path or URL (any mmengine scheme).
        strict (bool): Stop when any key is missing, unexpected or of
            another shape. Otherwise load what fits.
        owner (str): How messages name the model (``'teacher'``).
        state (Mapping, optional): The already extracted state dict.
        hint (str): How to relax ``strict`` (the config key), for the
            message.
        min_fraction (float): Stop, whatever ``strict`` says, when less than
            this share of the model's values is loaded.

    Returns:
        dict: ``fraction`` (loaded share of values), ``loaded`` and
        ``total`` value counts, ``missing``/``unexpected``/``mismatched``
        key lists.

    Raises:
        CheckpointMismatchError: Keys do not fit and ``strict``, or too
            little fits.
    """
    from mmengine.logging import print_log
    if state is None:
        try:
            state = read_state_dict(checkpoint)
        except FileNotFoundError as err:
            raise FileNotFoundError(
                f'The {owner} checkpoint {checkpoint!r} was not found ({err}).'
                ' Give an existing local path or a URL.') from None
    own = model.state_dict()
    fit = state_fit(own, state)
    fits, missing, unexpected, mismatched = (
        fit[k] for k in ('fits', 'missing', 'unexpected', 'mismatched'))
    fraction = fit['fraction']
    report = ''
    if missing:
        report += (f'\n  missing in the checkpoint ({len(missing)}):\n' +
                   _describe(missing))
    if unexpected:
        report += (f'\n  unexpected in the checkpoint ({len(unexpected)}):'
                   '\n' + _describe(unexpected))
    if mismatched:
        report += (f'\n  shape mismatch ({len(mismatched)}):\n' + _describe([
            f'{k}: checkpoint {tuple(state[k].shape)} vs model '
            f'{tuple(own[k].shape)}' for k in mismatched]))
    share = fit_share(fit, owner)
    head = (f'The checkpoint {checkpoint!r} does not fit the model of the '
            f'config ({owner})')
    if report and (strict or fraction < min_fraction):
        if not fits:
            reason = 'not a single weight fits'
        elif fraction < min_fraction:
            reason = f'only {share} would load'
        else:
            reason = f'{share} would load'
        raise CheckpointMismatchError(
            f'{head}: {reason}.{report}\nUse the config the checkpoint was '
            'trained with' +
            (f', or {hint} to load only the matching weights.'
             if hint and fraction >= min_fraction else '.'))
    if report:
        warn(f'{head}:{report}\nLoading the matching weights only '
             f'(strict=False): {share}.')
    model.load_state_dict({k: state[k] for k in fits}, strict=False)
    print_log(f'{owner} checkpoint {checkpoint}: loaded {share}.',
              logger='current')
    return dict(fraction=fraction, loaded=fit['loaded'], total=fit['total'],
                missing=missing, unexpected=unexpected,
                mismatched=mismatched)


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
    # ``<path>.tmp-<pid>`` (StudentCheckpointHook removes those of dead
    # writers), created exclusively so that no existing file is ever
    # replaced, then moved into place: a crash never leaves half a file
    # under ``path``
    tmp = f'{path}.tmp-{os.getpid()}'
    handle = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        with os.fdopen(handle, 'wb') as f:
            torch.save(checkpoint, f)
        if not overwrite and osp.exists(path):
            raise FileExistsError(f'{path} appeared while it was written.')
        os.replace(tmp, path)
    finally:
        if osp.exists(tmp):
            os.remove(tmp)
    return path
