"""One reader for every checkpoint: every mmengine scheme weights-only, one
message per failure, the loaded share counted by values; the export."""
import os
import os.path as osp
import pickle
import sys
import types

import numpy as np
import pytest
import torch
import torch.nn as nn
from mmengine.logging import HistoryBuffer
from mmengine.runner.checkpoint import CheckpointLoader

import mmdistill  # noqa: F401  installs the weights-only schemes
from mmdistill.utils import checkpoint as ckpt_io
from mmdistill.utils.checkpoint import (CheckpointError,
                                        CheckpointMismatchError,
                                        UnsafeCheckpointError,
                                        extract_state_dict, load_weights,
                                        read_checkpoint,
                                        save_student_checkpoint,
                                        student_state_dict)

sys.path.insert(0, osp.dirname(osp.abspath(__file__)))
from test_safe_pickle import Evil, runner_like_checkpoint  # noqa: E402


def evil_file(path, marker):
    os.makedirs(osp.dirname(path), exist_ok=True)
    torch.save(dict(state_dict=dict(w=torch.ones(1)), x=Evil(marker)), path)


def test_runner_checkpoint_loads_everywhere(tmp_path):
    path = str(tmp_path / 'iter_2.pth')
    runner_like_checkpoint(path)
    for loaded in (CheckpointLoader.load_checkpoint(path),
                   read_checkpoint(path)):
        buffer = loaded['message_hub']['log_scalars']['train/loss']
        assert isinstance(buffer, HistoryBuffer)
        assert loaded['meta']['seed'] == 3


def test_every_mmengine_scheme_is_weights_only():
    for prefix, loader in CheckpointLoader._schemes.items():
        assert loader.__module__ == 'mmdistill.utils.checkpoint', prefix
    assert {'', 'http://', 'https://', 'torchvision://', 'modelzoo://',
            'open-mmlab://', 'openmmlab://', 'mmcls://',
            'pavi://'} <= set(CheckpointLoader._schemes)


@pytest.fixture
def hub_cache(tmp_path, monkeypatch):
    """torch's hub cache in tmp: where URL checkpoints are looked up."""
    monkeypatch.setattr(torch.hub, 'get_dir', lambda: str(tmp_path / 'hub'))
    return str(tmp_path / 'hub' / 'checkpoints')


def _cached_name(url):
    return osp.basename(url.split('?')[0])


def scheme_cases():
    from mmengine.runner.checkpoint import (get_external_models,
                                            get_mmcls_models,
                                            get_torchvision_models)
    tv = get_torchvision_models()['resnet50']
    mm = get_external_models()['resnet50_v1c']
    cls_name = sorted(get_mmcls_models())[0]
    cls = get_mmcls_models()[cls_name]
    return [('torchvision://resnet50', tv), ('modelzoo://resnet50', tv),
            ('open-mmlab://resnet50_v1c', mm),
            ('openmmlab://resnet50_v1c', mm), (f'mmcls://{cls_name}', cls),
            ('https://download.example.org/x/teacher.pth',
             'https://download.example.org/x/teacher.pth')]


@pytest.mark.parametrize('source,url', scheme_cases())
def test_hub_cached_payload_is_refused_per_scheme(hub_cache, tmp_path,
                                                  source, url):
    """A crafted file in the hub cache under the expected name (what the
    probe did with open-mmlab://resnet50_v1c) does not run."""
    marker = str(tmp_path / 'ran')
    evil_file(osp.join(hub_cache, _cached_name(url)), marker)
    with pytest.raises(UnsafeCheckpointError, match='Refusing to load'):
        CheckpointLoader.load_checkpoint(source)
    assert not osp.exists(marker)


def test_pretrained_init_cfg_is_weights_only(hub_cache, tmp_path):
    """A stock student's init_cfg=dict(type='Pretrained',
    checkpoint='torchvision://resnet50') goes through the same reader."""
    from mmengine.model.weight_init import PretrainedInit
    from mmengine.runner.checkpoint import get_torchvision_models
    marker = str(tmp_path / 'ran')
    url = get_torchvision_models()['resnet50']
    evil_file(osp.join(hub_cache, _cached_name(url)), marker)
    with pytest.raises(UnsafeCheckpointError):
        PretrainedInit(checkpoint='torchvision://resnet50')(nn.Linear(1, 1))
    assert not osp.exists(marker)


def test_pavi_and_ceph_schemes_are_weights_only(tmp_path, monkeypatch):
    marker = str(tmp_path / 'ran')
    path = str(tmp_path / 'evil.pth')
    evil_file(path, marker)

    class Model:
        name = 'evil.pth'

        def download(self, dst):
            with open(path, 'rb') as src, open(dst, 'wb') as out:
                out.write(src.read())

    pavi = types.ModuleType('pavi')
    pavi.modelcloud = types.SimpleNamespace(get=lambda name: Model())
    monkeypatch.setitem(sys.modules, 'pavi', pavi)
    with pytest.raises(UnsafeCheckpointError):
        CheckpointLoader.load_checkpoint('pavi://some/model')

    import mmengine.fileio
    data = open(path, 'rb').read()
    monkeypatch.setattr(
        mmengine.fileio, 'get_file_backend',
        lambda *a, **k: types.SimpleNamespace(get=lambda name: data))
    with pytest.raises(UnsafeCheckpointError):
        CheckpointLoader.load_checkpoint('s3://bucket/evil.pth')
    assert not osp.exists(marker)


def test_url_without_network_names_the_url(hub_cache):
    url = 'http://127.0.0.1:9/teacher.pth'  # nothing listens on port 9
    with pytest.raises(CheckpointError) as err:
        read_checkpoint(url)
    message = str(err.value)
    assert url in message and 'local path' in message
    assert 'weights_only' not in message


@pytest.mark.parametrize('content', [
    # random bytes, fixed: a random first byte 'c' would read as a GLOBAL
    # (refused as unsafe, not unreadable) once in a few hundred runs
    'truncated', bytes(np.random.RandomState(0).randint(0, 256, 100,
                                                        dtype=np.uint8)),
    b'', b'\x80\x02not a checkpoint',
    b'PK\x03\x04 broken zip'
])
def test_unreadable_files_get_one_message(tmp_path, content):
    path = str(tmp_path / 'iter_2.pth')
    if content == 'truncated':
        runner_like_checkpoint(path)
        with open(path, 'rb') as f:
            head = f.read(os.path.getsize(path) // 2)
        content = head
    with open(path, 'wb') as f:
        f.write(content)
    for read in (CheckpointLoader.load_checkpoint, read_checkpoint):
        with pytest.raises(CheckpointError) as err:
            read(path)
        message = str(err.value)
        assert 'is not a readable checkpoint' in message and path in message
        assert 'weights_only' not in message and 'weights only' not in message


def test_missing_file():
    with pytest.raises(FileNotFoundError):
        read_checkpoint('/nonexistent/iter_1.pth')


def test_extract_state_dict():
    state = extract_state_dict(dict(state_dict={
        'module.student.backbone.w': torch.ones(1),
        'module.connectors.fpn.w': torch.ones(1)}))
    assert list(state) == ['backbone.w']
    assert list(extract_state_dict({'module.a': torch.ones(1)})) == ['a']
    with pytest.raises(CheckpointError, match='no state dict of tensors'):
        extract_state_dict(dict(state_dict=dict(a='text')), 'x.pth')


class Net(nn.Module):

    def __init__(self, width=8):
        super().__init__()
        self.conv = nn.Conv2d(3, width, 3)
        self.bn = nn.BatchNorm2d(width)
        self.fc = nn.Linear(width, 4)


def test_loaded_share_is_counted_by_values(tmp_path):
    """BN counters and biases are many keys but almost no values: a
    checkpoint of them fits 'almost nothing' and stops even with
    strict=False; the share is logged for every checkpoint."""
    model, other = Net(), Net(width=16)
    path = str(tmp_path / 'other.pth')
    torch.save(dict(state_dict=other.state_dict()), path)
    with pytest.raises(CheckpointMismatchError) as err:
        load_weights(model, path, strict=False, owner='teacher')
    message = str(err.value)
    # a BN counter and the fc bias: 5 of 293 values
    assert 'only 1.7% of the teacher weights (5 of 293 values' in message
    assert 'shape mismatch' in message and 'conv.weight' in message

    # everything but the fc layer: most values fit -> loads with a warning
    state = Net().state_dict()
    state.pop('fc.weight')
    torch.save(dict(state_dict=state), path)
    with pytest.raises(CheckpointMismatchError, match='strict=False'):
        load_weights(model, path, strict=True, owner='teacher',
                     hint='set teacher=dict(..., strict=False)')
    with pytest.warns(UserWarning, match='matching weights only'):
        report = load_weights(model, path, strict=False, owner='teacher')
    assert report['missing'] == ['fc.weight']
    total = sum(v.numel() for v in model.state_dict().values())
    assert report['loaded'] == total - 32
    assert report['fraction'] == pytest.approx((total - 32) / total)
    assert torch.equal(model.conv.weight, state['conv.weight'])


def test_student_export_is_plain_and_never_overwritten(tmp_path):
    state = student_state_dict({
        'module.student.backbone.w': torch.ones(1),
        'student.head.b': torch.zeros(2),
        'connectors.fpn_0.mlp.0.weight': torch.ones(3),
    })
    assert list(state) == ['backbone.w', 'head.b']
    path = str(tmp_path / 'student.pth')
    save_student_checkpoint(
        state, path, dataset_meta=dict(classes=('a', ), palette=np.eye(2)))
    unsafe = getattr(torch.serialization, 'get_unsafe_globals_in_checkpoint',
                     None)
    if unsafe is not None:
        assert unsafe(path) == []
    # torch's own weights-only reader, with only torch's allowlist
    loaded = ckpt_io.safe_torch_load(path, backend='restricted')
    palette = loaded['meta']['dataset_meta']['palette']
    assert palette == [[1.0, 0.0], [0.0, 1.0]]
    with open(path, 'rb') as f:
        assert b'numpy' not in f.read()
    with pytest.raises(FileExistsError, match='overwrite'):
        save_student_checkpoint(state, path)
    with pytest.raises(KeyError, match='not a checkpoint of a mmdistill'):
        student_state_dict({'backbone.w': torch.ones(1)})
    assert not isinstance(loaded, pickle.PickleError)


def test_reader_errors_are_cut_at_a_sentence():
    """torch's long first lines are cut where a sentence ends, or marked
    as cut; never in the middle without a sign."""
    from mmdistill.utils.checkpoint import _first_line
    long = ('PytorchStreamReader failed reading zip archive: failed finding '
            'central directory. ' + 'x' * 150 + '. There is a high '
            'likelihood that your checkpoint file is corrupted or was saved '
            'with an older version.')
    text = _first_line(RuntimeError(long))
    assert text.startswith('RuntimeError: PytorchStreamReader')
    assert text.endswith('x.') and 'likelihood' not in text
    text = _first_line(RuntimeError('y' * 300))
    assert text == 'RuntimeError: ' + 'y' * 240 + '...'
    assert _first_line(RuntimeError('short')) == 'RuntimeError: short'
