"""Weights-only loading with one allowlist, on both backends.

``torch`` (torch's weights-only unpickler + our allowlist) exists on torch >=
2.6; ``restricted`` (our unpickler) runs on every torch, and is what torch
2.0-2.5 use. Each case runs on each backend the installed torch has, so the
suite on torch 2.1 (make test-compat) and on torch 2.13 covers both.
"""
import collections
import io
import os
import pickle
import zipfile

import numpy as np
import pytest
import torch
from mmengine.logging import HistoryBuffer, MessageHub

import mmdistill  # noqa: F401
from mmdistill.utils.safe_pickle import (TORCH_ALLOWLIST, RestrictedUnpickler,
                                         UnsafeCheckpointError,
                                         safe_torch_load)

BACKENDS = ['restricted'] + (['torch'] if TORCH_ALLOWLIST else [])


class Evil:

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, 'w'))


def runner_like_checkpoint(path, legacy=False):
    """What mmengine's Runner.save_checkpoint writes, in small."""
    hub = MessageHub.get_instance('test_safe_pickle')
    hub.update_scalar('train/loss', 1.5)
    hub.update_scalar('train/loss', np.float64(0.5))
    torch.save(
        dict(
            meta=dict(epoch=1, iter=2, seed=np.int64(3),
                      dataset_meta=dict(classes=('a', 'b'))),
            state_dict=dict(w=torch.ones(2), b=torch.arange(3)),
            message_hub=hub.state_dict(),
            optimizer=dict(state={}, param_groups=[dict(lr=0.1)]),
            counts=collections.Counter(cat=2, dog=1),
            arrays=dict(a=np.arange(4, dtype=np.float32),
                        d=np.dtype('int16'))),
        path,
        _use_new_zipfile_serialization=not legacy)


def rewrite_pickle(path, replace):
    """Apply ``replace`` to the pickle inside a zip checkpoint."""
    with zipfile.ZipFile(path) as z:
        files = {n: z.read(n) for n in z.namelist()}
    name = [n for n in files if n.endswith('data.pkl')][0]
    files[name] = replace(files[name])
    with zipfile.ZipFile(path, 'w') as z:
        for n, data in files.items():
            z.writestr(n, data)


@pytest.mark.parametrize('backend', BACKENDS)
@pytest.mark.parametrize('legacy', [False, True])
def test_runner_checkpoint_loads(tmp_path, backend, legacy):
    path = str(tmp_path / 'iter_2.pth')
    runner_like_checkpoint(path, legacy)
    loaded = safe_torch_load(path, 'cpu', backend=backend)
    buffer = loaded['message_hub']['log_scalars']['train/loss']
    assert isinstance(buffer, HistoryBuffer)
    assert buffer.mean() == pytest.approx(1.0)
    assert loaded['meta']['seed'] == 3
    assert torch.equal(loaded['state_dict']['b'], torch.arange(3))
    assert loaded['arrays']['a'].tolist() == [0, 1, 2, 3]
    assert loaded['arrays']['d'] == np.dtype('int16')
    assert loaded['counts'] == collections.Counter(cat=2, dog=1)


@pytest.mark.parametrize('backend', BACKENDS)
def test_other_numpy_major_names_load(tmp_path, backend):
    """A checkpoint written under numpy 1.x (``numpy.core``) loads under
    numpy 2 and the other way round."""
    path = str(tmp_path / 'np.pth')
    torch.save(dict(x=np.float64(2.5), a=np.ones(2)), path)
    ours = b'numpy._core.' if int(np.__version__[0]) >= 2 else b'numpy.core.'
    other = b'numpy.core.' if ours == b'numpy._core.' else b'numpy._core.'
    rewrite_pickle(path, lambda data: data.replace(ours, other))
    loaded = safe_torch_load(path, backend=backend)
    assert loaded['x'] == 2.5 and loaded['a'].tolist() == [1.0, 1.0]


@pytest.mark.parametrize('backend', BACKENDS)
@pytest.mark.parametrize('fmt', ['zip', 'legacy', 'bare'])
def test_arbitrary_objects_are_refused(tmp_path, backend, fmt):
    marker = str(tmp_path / 'ran')
    path = str(tmp_path / 'evil.pth')
    if fmt == 'bare':  # a bare pickle stream: the legacy reader's 1st record
        with open(path, 'wb') as f:
            pickle.dump(Evil(marker), f, protocol=2)
    else:
        torch.save(dict(w=torch.ones(1), x=Evil(marker)), path,
                   _use_new_zipfile_serialization=fmt == 'zip')
    with pytest.raises(UnsafeCheckpointError, match='builtins|io|open'):
        safe_torch_load(path, backend=backend)
    assert not os.path.exists(marker)


GETATTR_INIT = (b'\x80\x02c__builtin__\ngetattr\n'
                b'cmmengine.logging.history_buffer\nHistoryBuffer\n'
                b'X\x08\x00\x00\x00__init__\x86R.')


@pytest.mark.parametrize('backend', BACKENDS)
def test_getattr_shim_only_reaches_history_buffer_statistics(
        tmp_path, backend):
    path = str(tmp_path / 'getattr.pth')
    torch.save(dict(a=1), path)
    rewrite_pickle(path, lambda data: GETATTR_INIT)
    with pytest.raises(pickle.UnpicklingError):
        safe_torch_load(path, backend=backend)


def test_build_cannot_change_allowed_functions():
    """BUILD on an allowed function (``__defaults__``) or class is refused by
    the restricted unpickler; the standard one would apply it."""
    defaults = torch._utils._rebuild_tensor_v2.__defaults__
    build = (b'\x80\x02ctorch._utils\n_rebuild_tensor_v2\nN}X\x0c\x00\x00'
             b'\x00__defaults__(K\x07ts\x86b.')
    with pytest.raises(UnsafeCheckpointError, match='function'):
        RestrictedUnpickler(io.BytesIO(build)).load()
    cls_build = (b'\x80\x02cmmengine.logging.history_buffer\nHistoryBuffer\n'
                 b'N}X\x04\x00\x00\x00meanK\x07s\x86b.')
    with pytest.raises(UnsafeCheckpointError, match='type'):
        RestrictedUnpickler(io.BytesIO(cls_build)).load()
    assert torch._utils._rebuild_tensor_v2.__defaults__ == defaults
    assert callable(HistoryBuffer.mean)


def test_inst_and_obj_opcodes_need_the_allowlist():
    inst = b'(ios\nsystem\nS"echo hi"\n.'  # INST os.system
    with pytest.raises(UnsafeCheckpointError, match='os.system'):
        RestrictedUnpickler(io.BytesIO(inst)).load()
    stack_global = (b'\x80\x04\x95\x00\x00\x00\x00\x00\x00\x00\x00\x8c\x02os'
                    b'\x94\x8c\x06system\x94\x93\x94.')
    with pytest.raises(UnsafeCheckpointError, match='os.system'):
        RestrictedUnpickler(io.BytesIO(stack_global)).load()


def test_restricted_allowlist_covers_torchs_own():
    """Everything torch's own weights-only unpickler allows (as far as this
    torch has it) is allowed by the restricted one, so a file that loads on
    torch >= 2.6 loads on torch 2.1 too."""
    from mmdistill.utils.safe_pickle import _torch_globals
    wou = getattr(torch, '_weights_only_unpickler', None)
    if wou is None or not hasattr(wou, '_get_allowed_globals'):
        pytest.skip('this torch has no weights-only allowlist to compare')
    theirs = set(wou._get_allowed_globals())
    assert theirs - set(_torch_globals()) <= {'_codecs.encode'}


#: hand-written checkpoints whose pickle avoids GLOBAL/STACK_GLOBAL, or
#: builds a function; what the refusal names
UNUSUAL_PICKLES = {
    # protocol 0 string, then INST os.system
    'inst': (b"(S'echo hi'\nios\nsystem\n.", 'it holds os.system'),
    # OBJ on a class from GLOBAL
    'obj': (b'\x80\x02(cos\nsystem\nX\x04\x00\x00\x00trueo.',
            'it holds os.system'),
    # BUILD that sets __defaults__ of an allowed function
    'build': (b'\x80\x02ctorch._utils\n_rebuild_tensor_v2\n}X\x0c\x00\x00'
              b'\x00__defaults__Nsb.', 'it sets the state of a function'),
}


@pytest.mark.parametrize('backend', BACKENDS)
@pytest.mark.parametrize('case', sorted(UNUSUAL_PICKLES))
def test_refusals_read_the_same_on_both_backends(tmp_path, backend, case):
    """Opcodes torch's weights-only unpickler does not read (protocol 0
    strings, INST, OBJ) and a BUILD on a function are refused as unsafe,
    naming what the file holds, as the restricted unpickler does (not
    called corrupt)."""
    body, named = UNUSUAL_PICKLES[case]
    path = str(tmp_path / f'{case}.pth')
    torch.save(dict(a=1), path)
    rewrite_pickle(path, lambda data: body)
    with pytest.raises(UnsafeCheckpointError) as err:
        safe_torch_load(path, backend=backend)
    assert str(err.value).startswith(named)
    assert 'not allowed in a checkpoint' in str(err.value)


@pytest.mark.parametrize('backend', BACKENDS)
def test_a_benign_pickle_of_another_protocol_loads(tmp_path, backend):
    """A protocol-4 pickle (FRAME, which torch's unpickler does not read)
    of allowed objects loads, as on torch < 2.6."""
    path = str(tmp_path / 'p4.pth')
    torch.save(dict(a=1), path)
    rewrite_pickle(path, lambda data: pickle.dumps(
        dict(x=1.5, names=['a', 'b']), protocol=4))
    assert safe_torch_load(path, backend=backend) == dict(x=1.5,
                                                          names=['a', 'b'])


@pytest.mark.skipif(not TORCH_ALLOWLIST,
                    reason="torch's weights-only reader hands over to the "
                    'restricted one only on torch >= 2.6')
def test_a_file_object_is_read_from_where_it_stands(tmp_path):
    """A stream positioned past other data: the restricted reader that
    takes over from torch's starts where torch started, not at byte 0."""
    path = str(tmp_path / 'p4.pth')
    torch.save(dict(a=1), path)
    rewrite_pickle(path, lambda data: pickle.dumps(dict(x=2.5), protocol=4))
    with open(path, 'rb') as f:
        data = f.read()
    stream = io.BytesIO(b'HEADER' + data)
    stream.seek(len(b'HEADER'))
    assert safe_torch_load(stream, backend='torch') == dict(x=2.5)
