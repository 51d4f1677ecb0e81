"""What distillation costs: time per training step and memory of the
distiller against the student trained alone, measured in one run.

For a distillation config this builds the distiller and the plain student
(the ``student_config.py`` model), feeds both the same batches through
``train_step`` (data preprocessor, forward, backward, optimizer step: what
the Runner does per iteration), and reports the median seconds per step,
their ratio, the teacher's share (its forward up to the deepest tap, and
what a full teacher forward would cost), and peak memory (CUDA: peak
allocated per phase; CPU: the process's peak resident memory after each
phase, which only grows).

Example::

    python tools/analysis/benchmark_overhead.py \\
        configs/mlp/mlp_backbone_pspnet_r101-r18_80k_cityscapes-512x1024.py \\
        --size 512 1024 --batch-size 2 --iters 20 --out overhead.json

Without network access use ``--random-teacher`` (the teacher gets random
weights, which costs the same time). Batches come from
:mod:`mmdistill.testing.batches` (random images and ground truth of the
config's task), so no dataset is needed.
"""
import argparse
import copy
import json
import os
import os.path as osp
import resource
import statistics
import sys
import tempfile
import time

import torch
from mmengine.config import Config, DictAction
from mmengine.optim import OptimWrapper
from mmengine.registry import MODELS, DefaultScope


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description='Time and memory of a distillation config against its '
        'student trained alone.')
    parser.add_argument('config', help='distillation config file')
    parser.add_argument('--size', type=int, nargs=2, default=None,
                        metavar=('H', 'W'),
                        help='input height and width (default: 512 512 for '
                        'detection/segmentation, 224 224 for classification)')
    parser.add_argument('--batch-size', type=int, default=2,
                        help='images per step (default 2)')
    parser.add_argument('--iters', type=int, default=10,
                        help='timed steps per model (default 10)')
    parser.add_argument('--warmup', type=int, default=2,
                        help='untimed steps first (default 2)')
    parser.add_argument('--device', default=None,
                        help='cpu or cuda (default: cuda when available)')
    parser.add_argument('--amp', action='store_true',
                        help='automatic mixed precision (AmpOptimWrapper)')
    parser.add_argument('--random-teacher', action='store_true',
                        help='give the teacher random weights instead of '
                        'loading its checkpoint')
    parser.add_argument('--out', default=None,
                        help='write the results as JSON to this file')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config entries, key=value')
    return parser.parse_args(argv)


def kind_of(scope: str) -> str:
    from mmdistill.testing import KIND_OF_SCOPE
    if scope not in KIND_OF_SCOPE:
        raise ValueError(
            f'The student config has default_scope {scope!r}; the benchmark '
            f'makes batches for {sorted(KIND_OF_SCOPE)} models.')
    return KIND_OF_SCOPE[scope]


def num_classes_of(model_cfg: dict) -> int:
    """The student's class count, for labels in range (0: keep default)."""
    for key in ('bbox_head', 'decode_head', 'head', 'roi_head'):
        head = model_cfg.get(key)
        if isinstance(head, dict):
            if 'num_classes' in head:
                return int(head['num_classes'])
            inner = head.get('bbox_head')
            if isinstance(inner, dict) and 'num_classes' in inner:
                return int(inner['num_classes'])
    return 0


def peak_memory_mb(device: torch.device) -> float:
    if device.type == 'cuda':
        return torch.cuda.max_memory_allocated(device) / 2**20
    # ru_maxrss is in KiB on Linux
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def sync(device: torch.device) -> None:
    if device.type == 'cuda':
        torch.cuda.synchronize(device)


def time_steps(step, batches, warmup: int, device) -> list:
    """Run ``step(batch)`` for the warm-up then the timed batches."""
    for batch in batches[:warmup]:
        step(batch)
    times = []
    for batch in batches[warmup:]:
        sync(device)
        start = time.perf_counter()
        step(batch)
        sync(device)
        times.append(time.perf_counter() - start)
    return times


def make_optim_wrapper(model, amp: bool):
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(params, lr=1e-6, momentum=0.9)
    if amp:
        from mmengine.optim import AmpOptimWrapper
        return AmpOptimWrapper(optimizer=optimizer)
    return OptimWrapper(optimizer)


def measure_training(model, batches, args, device) -> dict:
    """Median seconds per ``train_step`` and the peak memory."""
    model.train()
    wrapper = make_optim_wrapper(model, args.amp)
    if device.type == 'cuda':
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    times = time_steps(lambda b: model.train_step(copy.copy(b), wrapper),
                       batches, args.warmup, device)
    return dict(sec_per_iter=statistics.median(times),
                mean_sec_per_iter=statistics.mean(times),
                peak_memory_mb=peak_memory_mb(device))


@torch.no_grad()
def measure_teacher(distiller, batches, args, device) -> dict:
    """The teacher's forward as the distiller runs it (to its deepest tap)
    and in full (``mode='tensor'``), on preprocessed batches."""
    ready = [distiller.data_preprocessor(copy.copy(b), True)
             for b in batches]

    def tapped(data):
        distiller.teacher_features(data['inputs'], data['data_samples'])

    def full(data):
        distiller.teacher(data['inputs'], data['data_samples'],
                          mode='tensor')

    autocast = torch.autocast(device.type, enabled=args.amp)
    with autocast:
        to_tap = time_steps(tapped, ready, args.warmup, device)
        whole = time_steps(full, ready, args.warmup, device)
    return dict(teacher_to_deepest_tap_sec=statistics.median(to_tap),
                teacher_full_forward_sec=statistics.median(whole))


def check_distiller(cfg: Config, path: str) -> None:
    if cfg.model.get('type') != 'mmdistill.SingleTeacherDistiller':
        raise ValueError(
            f'{path} is not a distillation config (model.type is '
            f'{cfg.model.get("type")!r}, not '
            "'mmdistill.SingleTeacherDistiller').")


def build_student(cfg: Config):
    """The plain student (the model of ``student_config.py``), on CPU."""
    from mmdistill.hooks.student_checkpoint import student_config
    with DefaultScope.overwrite_default_scope(cfg.get('default_scope')):
        return MODELS.build(student_config(cfg).model)


def build_distiller(cfg: Config, args, workdir: str):
    """The distiller (with its teacher), on CPU."""
    from mmdistill.testing import use_random_teacher
    if args.random_teacher:
        use_random_teacher(cfg, osp.join(workdir, 'teacher.pth'))
    with DefaultScope.overwrite_default_scope(cfg.get('default_scope')):
        return MODELS.build(copy.deepcopy(cfg.model))


def main(argv=None) -> dict:
    args = parse_args(argv)
    import mmdistill  # noqa: F401  registries, checkpoint allowlist
    from mmdistill.testing import random_batch
    cfg = Config.fromfile(args.config)
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    device = torch.device(args.device or (
        'cuda' if torch.cuda.is_available() else 'cpu'))
    kind = kind_of(cfg.get('default_scope'))
    size = args.size or ((224, 224) if kind == 'cls' else (512, 512))
    if args.iters < 1 or args.warmup < 0:
        raise ValueError('--iters must be >= 1 and --warmup >= 0.')
    if args.amp and device.type != 'cuda':
        raise ValueError('--amp needs a CUDA device (mmengine\'s '
                         'AmpOptimWrapper); drop it on the CPU.')
    check_distiller(cfg, args.config)
    classes = num_classes_of(cfg.model.student)
    batches = [
        random_batch(kind, size, args.batch_size, classes, seed=i)
        for i in range(args.warmup + args.iters)
    ]
    # The student alone is built and measured before the teacher exists: on
    # the CPU the process's peak memory only grows. Both students start
    # from the same weights (a detector's work per step depends on them).
    torch.manual_seed(0)
    student = build_student(cfg)
    weights = copy.deepcopy(student.state_dict())
    student.to(device)
    alone = measure_training(student, batches, args, device)
    del student
    with tempfile.TemporaryDirectory() as workdir:
        distiller = build_distiller(cfg, args, workdir)
    distiller.student.load_state_dict(weights)
    distiller.to(device)
    distilled = measure_training(distiller, batches, args, device)
    distilled.update(measure_teacher(distiller, batches, args, device))
    result = dict(
        config=args.config,
        device=str(device),
        amp=args.amp,
        input_size=list(size),
        batch_size=args.batch_size,
        iters=args.iters,
        torch_threads=torch.get_num_threads(),
        student=alone,
        distiller=distilled,
        time_ratio=distilled['sec_per_iter'] / alone['sec_per_iter'],
        memory_ratio=distilled['peak_memory_mb'] / alone['peak_memory_mb'],
        memory_measure=('peak allocated per phase' if device.type == 'cuda'
                        else 'process peak resident memory after each '
                        'phase (CPU)'))
    print(format_result(result))
    if args.out:
        if osp.dirname(args.out):
            os.makedirs(osp.dirname(args.out), exist_ok=True)
        with open(args.out, 'w') as f:
            json.dump(result, f, indent=1)
        print(f'written to {args.out}')
    return result


def format_result(r: dict) -> str:
    s, d = r['student'], r['distiller']
    lines = [
        f'{r["config"]}',
        f'{r["device"]}, batch {r["batch_size"]} x {r["input_size"][0]}x'
        f'{r["input_size"][1]}, {r["iters"]} timed steps'
        f'{", AMP" if r["amp"] else ""}, {r["torch_threads"]} threads',
        f'{"":26}{"s/iter":>10}{"ratio":>8}{"memory MB":>12}{"ratio":>8}',
        f'{"student alone":26}{s["sec_per_iter"]:>10.4f}{1.0:>8.2f}'
        f'{s["peak_memory_mb"]:>12.0f}{1.0:>8.2f}',
        f'{"distiller":26}{d["sec_per_iter"]:>10.4f}{r["time_ratio"]:>8.2f}'
        f'{d["peak_memory_mb"]:>12.0f}{r["memory_ratio"]:>8.2f}',
        f'{"  teacher to deepest tap":26}'
        f'{d["teacher_to_deepest_tap_sec"]:>10.4f}',
        f'{"  teacher full forward":26}{d["teacher_full_forward_sec"]:>10.4f}',
        f'memory: {r["memory_measure"]}',
    ]
    return '\n'.join(lines)


if __name__ == '__main__':
    sys.exit(0 if main() else 1)
