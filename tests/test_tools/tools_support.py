"""Support for the tests of tools/: shrunken shipped configs written to disk
(the tools read config files; the table of configs and their shrinking are
``tests/tiny_configs.py``), and hooks that record each process's student
weights.

This module is imported by the test processes through ``custom_imports``
(``tests/test_tools`` is put on their ``PYTHONPATH``); it is not part of the
package.
"""
import copy
import hashlib
import importlib.util
import json
import os
import os.path as osp
import signal
import socket
import subprocess
from typing import Optional, Sequence

import torch
from mmengine.dist import get_dist_info
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper
from mmengine.registry import HOOKS

HERE = osp.dirname(osp.abspath(__file__))
ROOT = osp.dirname(osp.dirname(HERE))
PROBE = 'student_rank{rank}.json'
BN_BUFFERS = ('running_mean', 'running_var', 'num_batches_tracked')
BOXES = 'boxes_rank{rank}.json'
#: tools/train.py runs with this variable set kill themselves (SIGKILL) right
#: after the runner checkpoint of this iteration is saved
KILL_AFTER_ITER = 'MMDISTILL_TEST_KILL_AFTER_ITER'


def load_script(path: str, name: str):
    """A tool script (``tools/...py``, not a package module) imported as
    the module ``name``, for tests that call its functions in process."""
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def state_sha256(state) -> str:
    """sha256 over the names, dtypes, shapes and bytes of a state dict."""
    digest = hashlib.sha256()
    for key in sorted(state):
        value = state[key].detach().cpu().contiguous()
        digest.update(f'{key}|{value.dtype}|{tuple(value.shape)}|'.encode())
        digest.update(value.reshape(-1).view(torch.uint8).numpy().tobytes()
                      if value.numel() else b'')
    return digest.hexdigest()


@HOOKS.register_module()
class AutoWeightProbe(Hook):
    """After training, every process writes ``auto_weights_rank<R>.json``:
    the automatic loss weights its distiller uses."""

    priority = 'LOWEST'

    def after_train(self, runner) -> None:
        model = runner.model.module if is_model_wrapper(
            runner.model) else runner.model
        rank, _ = get_dist_info()
        with open(osp.join(runner.work_dir,
                           f'auto_weights_rank{rank}.json'), 'w') as f:
            json.dump(model.controls.loss_weights, f)


@HOOKS.register_module()
class StudentWeightProbe(Hook):
    """After training, every process writes ``student_rank<R>.json`` into
    the work dir: the sha256 of its student's parameters and of its whole
    student state (parameters and buffers), the iteration and world size,
    and ``buffers``: the sha256 of its student's buffers after every
    iteration at which a runner checkpoint was saved (after the checkpoint
    and export hooks of that iteration; BN statistics only)."""

    priority = 'LOWEST'

    def __init__(self) -> None:
        self.buffers = {}

    def _record_new_checkpoint(self, runner) -> None:
        from mmengine.hooks import CheckpointHook
        for hook in runner.hooks:
            path = getattr(hook, 'last_ckpt', None) if isinstance(
                hook, CheckpointHook) else None
            if path and osp.basename(path) not in self.buffers:
                model = runner.model.module if is_model_wrapper(
                    runner.model) else runner.model
                self.buffers[osp.basename(path)] = state_sha256({
                    k: v for k, v in model.student.named_buffers()
                    if k.endswith(BN_BUFFERS)})

    def after_train_iter(self, runner, batch_idx, data_batch=None,
                         outputs=None) -> None:
        self._record_new_checkpoint(runner)

    def after_train_epoch(self, runner) -> None:
        self._record_new_checkpoint(runner)

    def after_train(self, runner) -> None:
        model = runner.model.module if is_model_wrapper(
            runner.model) else runner.model
        student = model.student
        rank, world_size = get_dist_info()
        record = dict(
            rank=rank,
            world_size=world_size,
            iter=runner.iter,
            wrapper=type(runner.model).__name__,
            backend=torch.distributed.get_backend()
            if torch.distributed.is_initialized() else None,
            find_unused_parameters=getattr(runner.model,
                                           'find_unused_parameters', None),
            params=state_sha256(dict(student.named_parameters())),
            state=state_sha256(student.state_dict()),
            connectors=state_sha256(model.connectors.state_dict())
            if hasattr(model, 'connectors') else None,
            # what trains besides the student: connectors and the losses'
            # own parameters (FGD's global-context blocks)
            distillation=state_sha256(
                {**{f'c.{k}': v for k, v in model.connectors.state_dict(
                ).items()},
                 **{f'l.{k}': v for k, v in model.distill_losses.state_dict(
                 ).items()}}) if hasattr(model, 'connectors') else None,
            distillation_tensors=len(model.connectors.state_dict()) + len(
                model.distill_losses.state_dict())
            if hasattr(model, 'connectors') else 0,
            num_params=sum(p.numel() for p in student.parameters()),
            buffers=self.buffers)
        with open(osp.join(runner.work_dir, PROBE.format(rank=rank)),
                  'w') as f:
            json.dump(record, f)


@HOOKS.register_module()
class KillAfterCheckpoint(Hook):
    """With ``MMDISTILL_TEST_KILL_AFTER_ITER=N`` in the environment, the
    process kills itself with SIGKILL in iteration N right after
    ``CheckpointHook`` (priority VERY_LOW, 90) saved ``iter_N.pth`` and
    before ``StudentCheckpointHook`` (LOWEST, 100) exports it: a crash
    between the two saves. Without the variable it does nothing."""

    priority = 95

    def after_train_iter(self, runner, batch_idx, data_batch=None,
                         outputs=None) -> None:
        at = os.environ.get(KILL_AFTER_ITER)
        if at and runner.iter + 1 == int(at) and osp.exists(
                osp.join(runner.work_dir, f'iter_{at}.pth')):
            os.kill(os.getpid(), signal.SIGKILL)


@HOOKS.register_module()
class GtBoxProbe(Hook):
    """Every process writes ``boxes_rank<R>.json`` after training: how many
    images and ground-truth boxes its training batches held."""

    priority = 'LOWEST'

    def __init__(self) -> None:
        self.images = self.boxes = 0

    def before_train_iter(self, runner, batch_idx, data_batch=None) -> None:
        for sample in data_batch['data_samples']:
            self.images += 1
            self.boxes += len(sample.gt_instances)

    def after_train(self, runner) -> None:
        rank, _ = get_dist_info()
        with open(osp.join(runner.work_dir, BOXES.format(rank=rank)),
                  'w') as f:
            json.dump(dict(images=self.images, boxes=self.boxes), f)


def strip_boxes(data_root: str, split: str, keep) -> int:
    """Remove the annotations of the images of ``split`` whose position in
    the annotation file's image list does not pass ``keep(position)`` (what
    CocoDataset's order is); returns how many boxes were removed."""
    path = osp.join(data_root, 'annotations', f'instances_{split}2017.json')
    with open(path) as f:
        coco = json.load(f)
    kept_ids = {image['id'] for i, image in enumerate(coco['images'])
                if keep(i)}
    before = len(coco['annotations'])
    coco['annotations'] = [a for a in coco['annotations']
                           if a['image_id'] in kept_ids]
    with open(path, 'w') as f:
        json.dump(coco, f)
    return before - len(coco['annotations'])


def run_process_group(args, env: dict, timeout: float,
                      cwd: Optional[str] = None):
    """Run ``args`` in a new session; on timeout kill the whole process
    group (torchrun and its workers), so a hang fails the test instead of
    leaving processes behind. Returns ``(returncode or None on timeout,
    output)``."""
    proc = subprocess.Popen(
        args,
        cwd=cwd or ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True)
    try:
        output, _ = proc.communicate(timeout=timeout)
        return proc.returncode, output
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        output, _ = proc.communicate()
        return None, output


def free_port() -> int:
    """A TCP port nobody listens on now (for torchrun's rendezvous)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(('127.0.0.1', 0))
        return sock.getsockname()[1]


def tool_env(port: Optional[int] = None) -> dict:
    """Environment for a tool subprocess: the venv's python first on PATH,
    this folder importable (for ``custom_imports``), one thread a process."""
    import sys
    env = dict(os.environ)
    env['PATH'] = osp.dirname(sys.executable) + os.pathsep + env.get('PATH',
                                                                     '')
    env['PYTHON'] = sys.executable
    env['PYTHONPATH'] = os.pathsep.join(
        p for p in (HERE, env.get('PYTHONPATH')) if p)
    env.setdefault('OMP_NUM_THREADS', '1')
    if port is not None:
        env['PORT'] = str(port)
    return env


def write_tiny_config(name: str,
                      root: str,
                      train_images: int = 8,
                      val_images: int = 4,
                      length: int = 2,
                      checkpoint_interval: Optional[int] = None,
                      probe: bool = True,
                      hooks: Sequence[dict] = ()) -> str:
    """Shrink the shipped config ``name`` (a key of
    ``tiny_configs.CONFIGS``: 'retinanet', 'pspnet', 'fgd_retinanet', ...)
    to run in seconds over generated data under ``root`` and dump it to
    ``root/<name>.py``; a random teacher checkpoint is written beside it.

    ``length`` is epochs (detection) or iterations (segmentation); a
    validation follows every epoch / the last iteration, and a checkpoint
    every ``checkpoint_interval`` epochs / iterations (default: the same).
    ``probe`` adds :class:`StudentWeightProbe`; ``hooks`` are more hooks of
    this module (or any registered ones) to add.

    Returns:
        str: The config path.
    """
    # tests/ and the repository root are on sys.path in the test process
    # (tests/conftest.py); the tool processes, which only need the hooks
    # above, never get here
    from demo.synthetic import write_cityscapes_layout, write_coco_layout
    from tiny_configs import KIND, shrunken_config, tiny_runtime_of
    cfg = shrunken_config(name, osp.join(root, f'{name}_teacher.pth'))
    data = osp.join(root, f'{name}_data')
    splits = dict(train=train_images, val=val_images)
    work_dir = osp.join(root, f'{name}_work')
    if KIND[name] == 'det':
        write_coco_layout(data, splits)
        tiny_runtime_of(cfg, name, work_dir, data, epochs=length)
    else:
        write_cityscapes_layout(data, splits)
        tiny_runtime_of(cfg, name, work_dir, data, iters=length)
    if checkpoint_interval is not None:
        cfg.default_hooks.checkpoint.interval = checkpoint_interval
    # the tools decide the backend; keep the config's own choice open
    cfg.env_cfg.pop('dist_cfg', None)
    cfg.randomness = dict(seed=0)
    extra = ([dict(type='StudentWeightProbe')] if probe else []) + [
        dict(h) for h in hooks]
    if extra:
        imports = copy.deepcopy(cfg.get('custom_imports') or {})
        imports['imports'] = list(imports.get('imports', [])) + [
            'tools_support']
        cfg.custom_imports = imports
        cfg.custom_hooks = list(cfg.get('custom_hooks') or []) + extra
    path = osp.join(root, f'{name}.py')
    cfg.dump(path)
    return path


def tiny_student_weights(name: str, root: str):
    """:func:`write_tiny_config` (one epoch / iteration, no probe) and a
    checkpoint of its student's random weights, ``root/student.pth``.

    Returns:
        tuple: the config path, the loaded config and the checkpoint path.
    """
    from mmengine.config import Config

    from mmdistill.testing.tiny import random_checkpoint
    from tiny_configs import KIND
    config = write_tiny_config(name, root, length=1, probe=False)
    cfg = Config.fromfile(config)
    scope = 'mmdet' if KIND[name] == 'det' else 'mmseg'
    checkpoint = random_checkpoint(cfg.model.student,
                                   osp.join(root, 'student.pth'),
                                   scope=scope, init=False)
    return config, cfg, checkpoint


#: a demo distillation config of each codebase (tools/test.py tests its
#: student)
DEMO_DISTILL = dict(
    mmdet=osp.join(ROOT, 'demo', 'configs', 'det',
                   'mlp_fpn_retinanet_r50-r18_synth.py'),
    mmseg=osp.join(ROOT, 'demo', 'configs', 'seg',
                   'mlp_backbone_pspnet_r50-r18_synth.py'),
    mmpretrain=osp.join(ROOT, 'demo', 'configs', 'cls',
                        'kd_logits_resnet18-w32-w8_synth.py'))
