"""Runner checkpoints load on torch >= 2.6 without weakening weights-only."""
import os
import pickle

import pytest
import torch
from mmengine.logging import HistoryBuffer, MessageHub
from mmengine.runner.checkpoint import CheckpointLoader

import mmdistill  # noqa: F401  registers the allowlist
from mmdistill.utils.checkpoint import (read_checkpoint,
                                        save_student_checkpoint,
                                        student_state_dict)


class Evil:

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, 'w'))


def runner_like_checkpoint(path):
    """What mmengine's Runner.save_checkpoint writes, in small."""
    import numpy as np
    hub = MessageHub.get_instance('test_checkpoint')
    hub.update_scalar('train/loss', 1.5)
    hub.update_scalar('train/loss', np.float64(0.5))
    torch.save(
        dict(
            meta=dict(epoch=1, iter=2, seed=np.int64(3),
                      dataset_meta=dict(classes=('a', 'b'))),
            state_dict=dict(w=torch.ones(2)),
            message_hub=hub.state_dict(),
            optimizer=dict(state={}, param_groups=[dict(lr=0.1)])), path)


def test_runner_checkpoint_loads_weights_only(tmp_path):
    path = str(tmp_path / 'iter_2.pth')
    runner_like_checkpoint(path)
    for loaded in (torch.load(path, weights_only=True),
                   CheckpointLoader.load_checkpoint(path),
                   read_checkpoint(path)):
        buffer = loaded['message_hub']['log_scalars']['train/loss']
        assert isinstance(buffer, HistoryBuffer)
        assert buffer.mean() == pytest.approx(1.0)
        assert loaded['meta']['seed'] == 3


@pytest.mark.parametrize('legacy', [False, True])
def test_arbitrary_objects_are_still_refused(tmp_path, legacy):
    marker = str(tmp_path / 'ran')
    path = str(tmp_path / 'evil.pth')
    if legacy:  # pre-1.6 format: a bare pickle stream
        with open(path, 'wb') as f:
            pickle.dump(Evil(marker), f, protocol=2)
    else:
        torch.save(dict(x=Evil(marker)), path)
    with pytest.raises(pickle.UnpicklingError):
        CheckpointLoader.load_checkpoint(path)
    assert not os.path.exists(marker)


def test_getattr_shim_only_reaches_history_buffer_statistics(tmp_path):
    # getattr(HistoryBuffer, '__init__') -> must be refused
    data = (b'\x80\x02c__builtin__\ngetattr\n'
            b'cmmengine.logging.history_buffer\nHistoryBuffer\n'
            b'X\x08\x00\x00\x00__init__\x86R.')
    import io
    import zipfile
    path = str(tmp_path / 'getattr.pth')
    torch.save(dict(a=1), path)
    with zipfile.ZipFile(path) as z:
        names = z.namelist()
        files = {n: z.read(n) for n in names}
    pkl = [n for n in names if n.endswith('data.pkl')][0]
    files[pkl] = data
    with zipfile.ZipFile(path, 'w') as z:
        for n in names:
            z.writestr(n, files[n])
    with pytest.raises(pickle.UnpicklingError):
        torch.load(path, weights_only=True)
    # a BUILD that sets attributes on an allowed function is refused too
    build = (b'\x80\x02ctorch._utils\n_rebuild_tensor_v2\nN}X\x0c\x00\x00'
             b'\x00__defaults__(K\x07ts\x86b.')
    from torch import _weights_only_unpickler as wou
    with pytest.raises(Exception):
        wou.Unpickler(io.BytesIO(build)).load()
    assert torch._utils._rebuild_tensor_v2.__defaults__ != (7, )


def test_corrupt_file_says_so(tmp_path):
    path = str(tmp_path / 'iter_2.pth')
    runner_like_checkpoint(path)
    with open(path, 'rb') as f:
        head = f.read(os.path.getsize(path) // 2)
    with open(path, 'wb') as f:
        f.write(head)
    with pytest.raises(RuntimeError, match='truncated or corrupt'):
        CheckpointLoader.load_checkpoint(path)


def test_student_export_is_plain_and_never_overwritten(tmp_path):
    import numpy as np
    state = student_state_dict({
        'module.student.backbone.w': torch.ones(1),
        'student.head.b': torch.zeros(2),
        'connectors.fpn_0.mlp.0.weight': torch.ones(3),
    })
    assert list(state) == ['backbone.w', 'head.b']
    path = str(tmp_path / 'student.pth')
    save_student_checkpoint(
        state, path, dataset_meta=dict(classes=('a', ), palette=np.eye(2)))
    assert torch.serialization.get_unsafe_globals_in_checkpoint(path) == []
    loaded = torch.load(path, weights_only=True)
    assert loaded['meta']['dataset_meta']['palette'] == [[1.0, 0.0],
                                                          [0.0, 1.0]]
    with pytest.raises(FileExistsError, match='overwrite'):
        save_student_checkpoint(state, path)
    with pytest.raises(KeyError, match='not a checkpoint of a mmdistill'):
        student_state_dict({'backbone.w': torch.ones(1)})
