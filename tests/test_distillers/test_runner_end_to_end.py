"""A distillation config that inherits a stock mmdet/mmseg config trains,
validates, saves, resumes, and its student export loads in plain mmdet/mmseg
with the distiller's predictions (issue 2)."""
import hashlib
import os
import os.path as osp
import subprocess
import sys

import pytest
import torch
from mmengine.runner import Runner

from mmdistill.utils.checkpoint import read_checkpoint

pytestmark = pytest.mark.slow


def sha256(path):
    with open(path, 'rb') as f:
        return hashlib.sha256(f.read()).hexdigest()


def outputs_equal(a, b):
    """Equal nested tensors (mode='tensor' outputs)."""
    if isinstance(a, torch.Tensor):
        return torch.equal(a, b)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(map(outputs_equal, a, b))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(
            outputs_equal(a[k], b[k]) for k in a)
    return a == b


def assert_same_predictions(kind, distiller_out, plain_out):
    assert len(distiller_out) == len(plain_out)
    for d, p in zip(distiller_out, plain_out):
        if kind == 'det':
            for field in ('bboxes', 'scores', 'labels'):
                assert torch.equal(d.pred_instances[field],
                                   p.pred_instances[field])
        else:
            assert torch.equal(d.pred_sem_seg.data, p.pred_sem_seg.data)
            assert torch.equal(d.seg_logits.data, p.seg_logits.data)


def load_plain(kind, config, checkpoint):
    if kind == 'det':
        from mmdet.apis import init_detector
        return init_detector(config, checkpoint, device='cpu')
    from mmseg.apis import init_model
    return init_model(config, checkpoint, device='cpu')


@pytest.mark.parametrize('name',
                         ['retinanet', 'faster_rcnn', 'pspnet', 'deeplabv3'])
def test_train_validate_save_resume_export(name, tiny_cfg):
    kind = 'det' if name in ('retinanet', 'faster_rcnn') else 'seg'
    first = dict(epochs=1) if kind == 'det' else dict(iters=2)
    cfg, teacher_ckpt = tiny_cfg(name, **first)
    work = cfg.work_dir
    runner = Runner.from_cfg(cfg)
    runner.train()
    unit = 'epoch' if kind == 'det' else 'iter'
    ckpt1 = osp.join(work, f'{unit}_{1 if kind == "det" else 2}.pth')
    export1 = ckpt1.replace('.pth', '_student.pth')
    assert osp.isfile(ckpt1) and osp.isfile(export1)
    assert osp.isfile(osp.join(work, 'student_config.py'))

    # distillation losses were logged next to the student's own
    scalars = runner.message_hub.log_scalars
    distill_keys = [k for k in scalars if k.startswith('train/loss_distill')]
    assert distill_keys, sorted(scalars)
    assert all(torch.isfinite(torch.tensor(scalars[k].current()))
               for k in distill_keys)
    # validation ran with the stock evaluator
    metric = 'coco/bbox_mAP' if kind == 'det' else 'mIoU'
    assert any(k.endswith(metric) for k in scalars), sorted(scalars)

    # the teacher is bitwise the checkpoint and not in the runner checkpoint
    reference = torch.load(teacher_ckpt, map_location='cpu')['state_dict']
    for key, value in runner.model.teacher.state_dict().items():
        assert torch.equal(value, reference[key]), key
    saved = read_checkpoint(ckpt1)
    assert not any(k.startswith('teacher') for k in saved['state_dict'])
    assert any(k.startswith('connectors.') for k in saved['state_dict'])

    # resume from the runner checkpoint (torch 2.13, weights-only load)
    export1_hash = sha256(export1)
    second = dict(epochs=2) if kind == 'det' else dict(iters=4)
    cfg, _ = tiny_cfg(name, work_dir=work, **second)
    cfg.resume = True
    runner = Runner.from_cfg(cfg)
    runner.train()
    assert runner.iter == 4
    ckpt2 = osp.join(work, f'{unit}_{2 if kind == "det" else 4}.pth')
    export2 = ckpt2.replace('.pth', '_student.pth')
    assert osp.isfile(export2)
    assert sha256(export1) == export1_hash  # nothing rewritten
    assert not osp.exists(export1.replace('.pth', '-1.pth'))

    # load_from: the runner's own loader reads a runner checkpoint
    runner.load_checkpoint(ckpt1, map_location='cpu')
    for key, value in runner.model.state_dict().items():
        if key in saved['state_dict']:
            assert torch.equal(value, saved['state_dict'][key]), key
    runner.load_checkpoint(ckpt2, map_location='cpu')

    # the export is plain: no mmdistill type needed to unpickle it
    unsafe_globals = getattr(torch.serialization,
                             'get_unsafe_globals_in_checkpoint', None)
    if unsafe_globals is not None:  # torch >= 2.5
        assert unsafe_globals(export2) == []
    exported = torch.load(export2, map_location='cpu', weights_only=True)
    assert not any(k.startswith(('student.', 'connectors.', 'teacher'))
                   for k in exported['state_dict'])
    classes = runner.train_dataloader.dataset.metainfo['classes']
    assert list(exported['meta']['dataset_meta']['classes']) == list(classes)

    # plain mmdet/mmseg loads it, with the distiller's predictions
    plain = load_plain(kind, osp.join(work, 'student_config.py'), export2)
    assert list(plain.dataset_meta['classes']) == list(classes)
    distiller = runner.model.eval()
    batch = next(iter(runner.val_dataloader))
    with torch.no_grad():
        assert_same_predictions(kind, distiller.val_step(batch),
                                plain.val_step(batch))
        data = plain.data_preprocessor(batch, False)
        assert outputs_equal(
            distiller(**data, mode='tensor'), plain(**data, mode='tensor'))


@pytest.mark.parametrize('name,package', [('retinanet', 'mmdet'),
                                          ('pspnet', 'mmseg')])
def test_trains_with_the_stock_train_script(name, package, tiny_cfg,
                                            tmp_path):
    """mmdet's / mmseg's own tools/train.py: no custom_imports, mmengine
    imports mmdistill when it meets the 'mmdistill.' types."""
    import importlib
    cfg, _ = tiny_cfg(name, work_dir=str(tmp_path / 'stock'))
    path = str(tmp_path / 'distill_config.py')
    cfg.dump(path)
    script = osp.join(
        osp.dirname(importlib.import_module(package).__file__), '.mim',
        'tools', 'train.py')
    env = dict(os.environ, PYTHONPATH='')
    result = subprocess.run(
        [sys.executable, script, path, '--work-dir',
         str(tmp_path / 'stock')],
        cwd=str(tmp_path), env=env, capture_output=True, text=True,
        timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[
        -3000:]
    log = result.stdout + result.stderr
    assert 'loss_distill_' in log
    files = os.listdir(tmp_path / 'stock')
    assert any(f.endswith('_student.pth') for f in files), files
