"""What distillation costs: time per training step and memory of the
distiller against the student trained alone, and against the sum of its
parts, measured in one run.

For a distillation config this builds the distiller and the plain student
(the ``student_config.py`` model), feeds both the same batches through
``train_step`` (data preprocessor, forward, backward, optimizer step: what
the Runner does per iteration), and reports the median seconds per step and
their ratio. On the same batches it times the parts of a distillation step:

* the student's own training step (the student alone, above);
* the teacher's forward as the distiller runs it, up to its deepest tap
  (with ``teacher.dtype``/``channels_last`` when set, and then also in
  float32 for the saving), and a full teacher forward for comparison;
* each pair's connector + loss, forward and backward, on features recorded
  from both models (the student's detached, so only the pair's own work is
  timed); pairs whose connectors share embeddings (TaT's patch-group and
  anchor pairs, ``embeddings_from``) are one part, ``patch_group+anchor``,
  as a step computes their embeddings once;

and prints distiller / (sum of parts), which is 1 when distilling costs
nothing beyond its parts, and distiller / floor (student + teacher to its
tap). All parts are timed on every batch one after the other (medians over
the timed batches), so a machine whose load changes during the run biases
no ratio. Peak memory is measured first, each model trained alone for the
warm-up steps + 1, the last step measured: the peak of the bytes held by
tensors (CUDA: the allocator's peak; CPU: the same quantity from the
model's state and the torch profiler's allocation events, so CPU ratios
predict GPU ones; see :mod:`mmdistill.analysis.memory`).

Example::

    CONFIG=configs/mlp/mlp_backbone_pspnet-r101_pspnet-r18_80k_\\
    cityscapes-512x1024.py  # (one line)
    python tools/analysis/benchmark_overhead.py $CONFIG \\
        --size 512 1024 --batch-size 2 --iters 20 --out overhead.json
    # the teacher in bfloat16 and channels_last, the student in fp16 AMP
    python tools/analysis/benchmark_overhead.py CONFIG --amp-dtype float16 \\
        --teacher-dtype bfloat16 --teacher-channels-last

Without network access use ``--random-teacher`` (the teacher gets random
weights, which costs the same time). Batches come from
:mod:`mmdistill.testing.batches` (random images and ground truth of the
config's task), so no dataset is needed. The distiller's guard only warns
here (a random teacher may give any loss ratio).
"""
import argparse
import contextlib
import copy
import json
import os
import os.path as osp
import statistics
import sys
import tempfile
import time
from typing import List, Tuple

import torch
from mmengine.config import Config, DictAction
from mmengine.optim import OptimWrapper
from mmengine.registry import MODELS, DefaultScope

AMP_DTYPES = ('float16', 'bfloat16')
TEACHER_DTYPES = ('float32', 'bfloat16', 'float16')


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description='Time and memory of a distillation config against its '
        'student trained alone and against the sum of its parts.')
    parser.add_argument('config', help='distillation config file')
    parser.add_argument('--size', type=int, nargs=2, default=None,
                        metavar=('H', 'W'),
                        help='input height and width; a fixed size of the '
                        "student's data preprocessor (mmseg pads to its "
                        '"size") follows it (default: that fixed size, else '
                        '512 512 for detection/segmentation, 224 224 for '
                        'classification)')
    parser.add_argument('--batch-size', type=int, default=2,
                        help='images per step (default 2)')
    parser.add_argument('--iters', type=int, default=10,
                        help='timed steps per model (default 10)')
    parser.add_argument('--warmup', type=int, default=2,
                        help='untimed steps first (default 2)')
    parser.add_argument('--device', default=None,
                        help='cpu or cuda (default: cuda when available)')
    parser.add_argument('--amp', action='store_true',
                        help='automatic mixed precision (AmpOptimWrapper, '
                        'float16 unless --amp-dtype says otherwise)')
    parser.add_argument('--amp-dtype', choices=AMP_DTYPES, default=None,
                        help='AMP in this dtype (implies --amp): '
                        "mmengine's AmpOptimWrapper(dtype=...)")
    parser.add_argument('--teacher-dtype', choices=TEACHER_DTYPES,
                        default=None,
                        help='run the teacher in this dtype '
                        '(model.teacher.dtype); its forward is then also '
                        'timed in float32 for the saving')
    parser.add_argument('--teacher-channels-last', action='store_true',
                        help='teacher in torch.channels_last '
                        '(model.teacher.channels_last)')
    parser.add_argument('--random-teacher', action='store_true',
                        help='give the teacher random weights instead of '
                        'loading its checkpoint')
    parser.add_argument('--out', default=None,
                        help='write the results as JSON to this file')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config entries, key=value')
    args = parser.parse_args(argv)
    if args.amp_dtype:
        args.amp = True
    elif args.amp:
        args.amp_dtype = 'float16'
    return args


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


def sync(device: torch.device) -> None:
    if device.type == 'cuda':
        torch.cuda.synchronize(device)


def make_optim_wrapper(model, args):
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(params, lr=1e-6, momentum=0.9)
    if args.amp:
        from mmengine.optim import AmpOptimWrapper
        return AmpOptimWrapper(optimizer=optimizer, dtype=args.amp_dtype)
    return OptimWrapper(optimizer)


def amp_context(args, device):
    """The autocast AmpOptimWrapper puts the forward under (or none)."""
    if not args.amp:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=getattr(torch, args.amp_dtype))


def measure_memory(model, batches, args, device) -> float:
    """Peak memory (MiB) of ``model`` trained alone: the last of ``batches``
    measured, after the others (so the optimizer state exists); see
    :func:`mmdistill.analysis.memory.peak_step_memory`."""
    from mmdistill.analysis.memory import peak_step_memory
    model.train()
    wrapper = make_optim_wrapper(model, args)
    if device.type == 'cuda':
        torch.cuda.empty_cache()
    for batch in batches[:-1]:
        model.train_step(copy.copy(batch), wrapper)
    peak = peak_step_memory(
        lambda: model.train_step(copy.copy(batches[-1]), wrapper), model,
        wrapper.optimizer, device)
    model.zero_grad(set_to_none=True)
    return peak / 2**20


class Timer:
    """Seconds of each named part, per batch, synchronised."""

    def __init__(self, device) -> None:
        self.device = device
        self.times = {}

    def __call__(self, name: str, fn, record: bool = True):
        sync(self.device)
        start = time.perf_counter()
        out = fn()
        sync(self.device)
        if record:
            self.times.setdefault(name, []).append(time.perf_counter() -
                                                   start)
        return out

    def median(self, name: str) -> float:
        return statistics.median(self.times[name])

    def mean(self, name: str) -> float:
        return statistics.mean(self.times[name])


def record_pair_inputs(distiller, data, args, device) -> dict:
    """Both models' tapped features of one batch, as the distiller's
    ``loss`` gets them."""
    with amp_context(args, device):
        with torch.no_grad(), distiller.student_recorder.record() as student:
            distiller.student(data['inputs'], data['data_samples'],
                              mode='loss')
        teacher = distiller.teacher_features(data['inputs'],
                                             data['data_samples'])
    return {name: (student[name].detach(), teacher[name].detach())
            for name in distiller.pairs}


def pair_units(distiller) -> List[Tuple[str, ...]]:
    """The pairs timed together: one pair, or a group whose connectors
    share embeddings (computed once per step, so only timed together)."""
    units = []
    for name in distiller.pairs:
        group = next((tuple(g) for g in distiller.shared_pairs
                      if name in g), (name, ))
        if group not in units:
            units.append(group)
    return units


def pair_step(distiller, names, student, teacher, data_samples, args,
              device) -> None:
    """The pairs' connector + loss, forward and backward, as
    ``SingleTeacherDistiller.loss`` runs them (keeping their own saved
    tensors; with ``with_cp``, run again in the backward; the student
    feature is a leaf, so only the pairs' own work runs; pairs of one unit
    tap the same layers)."""
    from mmdistill.distillers.single_teacher import pair_saved_tensors
    student = student.detach().requires_grad_(True)
    with amp_context(args, device), pair_saved_tensors():
        results = distiller.run_pairs(names, [student] * len(names),
                                      [teacher] * len(names), data_samples)
    sum(value for value, _, _ in results).backward()


def measure_interleaved(student, distiller, plain_teacher, batches, args,
                        device) -> Timer:
    """Per batch, one after the other: the student's step, the distiller's
    step, the teacher to its tap (and in float32, and in full), each pair's
    connector + loss forward and backward. Interleaved, so that a machine
    whose load changes during the run biases no ratio."""
    student.train()
    distiller.train()
    student_wrapper = make_optim_wrapper(student, args)
    distiller_wrapper = make_optim_wrapper(distiller, args)
    runner = distiller.teacher_runner
    timer = Timer(device)
    for i, batch in enumerate(batches):
        timed = i >= args.warmup
        timer('student', lambda: student.train_step(
            copy.copy(batch), student_wrapper), timed)
        timer('distiller', lambda: distiller.train_step(
            copy.copy(batch), distiller_wrapper), timed)
        data = distiller.data_preprocessor(copy.copy(batch), True)
        inputs, samples = data['inputs'], data['data_samples']
        with torch.no_grad(), amp_context(args, device):
            timer('teacher_to_tap',
                  lambda: runner.features(inputs, samples), timed)
            timer('teacher_full',
                  lambda: runner.features(inputs, samples, stop=False),
                  timed)
            if plain_teacher is not None:
                timer('teacher_to_tap_float32',
                      lambda: plain_teacher.features(inputs, samples), timed)
        features = record_pair_inputs(distiller, data, args, device)
        for names in pair_units(distiller):
            s, t = features[names[0]]
            timer(f'pair/{"+".join(names)}', lambda: pair_step(
                distiller, names, s, t, samples, args, device), timed)
        del features, data
    distiller.zero_grad(set_to_none=True)
    return timer


def check_distiller(cfg: Config, path: str) -> None:
    if cfg.model.get('type') != 'mmdistill.SingleTeacherDistiller':
        raise ValueError(
            f'{path} is not a distillation config (model.type is '
            f'{cfg.model.get("type")!r}, not '
            "'mmdistill.SingleTeacherDistiller').")


def build_student(cfg: Config):
    """The plain student (the model of ``student_config.py``), on CPU."""
    from mmdistill.utils.config import model_config, student_config
    with DefaultScope.overwrite_default_scope(cfg.get('default_scope')):
        return MODELS.build(model_config(student_config(cfg)))


def build_distiller(cfg: Config, args, workdir: str):
    """The distiller (with its teacher), on CPU, its teacher in plain
    float32 (the options are applied by :func:`main` after the baseline)."""
    from mmdistill.testing import use_random_teacher
    from mmdistill.utils.checkpoint import CheckpointError
    from mmdistill.utils.config import model_config
    if args.random_teacher:
        use_random_teacher(cfg, osp.join(workdir, 'teacher.pth'))
    model = model_config(cfg)  # as the Runner builds it
    for key in ('dtype', 'channels_last'):
        model.teacher.pop(key, None)
    # speed is measured here, not training health (a random teacher)
    model.guard = dict(model.get('guard') or {}, action='warn')
    try:
        with DefaultScope.overwrite_default_scope(cfg.get('default_scope')):
            distiller = MODELS.build(model)
    except (CheckpointError, FileNotFoundError) as err:
        # the teacher's checkpoint could not be read: not needed to measure
        # the cost (a missing teacher config is another matter)
        checkpoint = cfg.model.teacher.get('checkpoint')
        if args.random_teacher or not checkpoint or str(
                checkpoint) not in str(err):
            raise
        raise type(err)(
            f'{err}\nFor this measurement the weights are not needed: '
            '--random-teacher gives the teacher random weights instead of '
            f'loading {checkpoint!r} (the same time and memory).') from None
    # loss_weight='auto' (AutoLossWeightHook's, not run here): any number
    # costs the same
    controls = distiller.controls
    controls.loss_weights.update(dict.fromkeys(controls.loss_weights, 1.0))
    return distiller


def input_size(cfg: Config, args, kind: str) -> tuple:
    """The size the models really get: ``--size``, which a fixed size of
    the student's data preprocessor (mmseg's ``size``: it pads every batch
    to it) follows, else that fixed size, else a default per task."""
    pre = cfg.model.student.get('data_preprocessor')
    fixed = pre.get('size') if isinstance(pre, dict) else None
    if args.size:
        if fixed is not None:
            pre['size'] = tuple(args.size)
        return tuple(args.size)
    if fixed is not None:
        return tuple(fixed)
    return (224, 224) if kind == 'cls' else (512, 512)


def teacher_options(cfg: Config, args) -> dict:
    """``teacher.dtype``/``channels_last`` of the config, or the command
    line's."""
    teacher = cfg.model.teacher
    options = dict(dtype=teacher.get('dtype'),
                   channels_last=bool(teacher.get('channels_last', False)))
    if args.teacher_dtype:
        options['dtype'] = args.teacher_dtype
    if args.teacher_channels_last:
        options['channels_last'] = True
    return options


def main(argv=None) -> dict:
    args = parse_args(argv)
    import mmdistill  # noqa: F401  registries, checkpoint allowlist
    from mmdistill.distillers import TeacherRunner
    from mmdistill.distillers.taps import FeatureRecorder
    from mmdistill.testing import random_batch
    cfg = Config.fromfile(args.config)
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    device = torch.device(args.device or (
        'cuda' if torch.cuda.is_available() else 'cpu'))
    if device.type == 'cuda' and not torch.cuda.is_available():
        raise SystemExit(
            f'benchmark_overhead.py: --device {args.device}, but this torch '
            f'({torch.__version__}) sees no CUDA device: run it on a GPU '
            'machine, or measure with --device cpu.')
    check_distiller(cfg, args.config)
    kind = kind_of(cfg.get('default_scope'))
    size = input_size(cfg, args, kind)
    if args.iters < 1 or args.warmup < 0:
        raise ValueError('--iters must be >= 1 and --warmup >= 0.')
    if args.amp:
        from mmdistill.utils.setup_env import amp_device_error
        error = amp_device_error(
            device.type, '--amp/--amp-dtype', '--teacher-dtype bfloat16')
        if error:
            raise ValueError(error)
    options = teacher_options(cfg, args)
    converted = bool(options['dtype'] or options['channels_last'])
    classes = num_classes_of(cfg.model.student)
    batches = [
        random_batch(kind, size, args.batch_size, classes, seed=i)
        for i in range(args.warmup + args.iters)
    ]
    first = batches[:args.warmup + 1]
    # Memory, each model alone, the student first (one model on the device
    # at a time). Both students start from the same weights (a detector's
    # work per step depends on them).
    torch.manual_seed(0)
    student = build_student(cfg)
    weights = copy.deepcopy(student.state_dict())
    student.to(device)
    student_memory = measure_memory(student, first, args, device)
    del student
    with tempfile.TemporaryDirectory() as workdir:
        distiller = build_distiller(cfg, args, workdir)
    distiller.student.load_state_dict(weights)
    if converted:
        distiller.teacher_runner = TeacherRunner(
            distiller.teacher, distiller.teacher_recorder, options['dtype'],
            options['channels_last'])
    distiller.to(device)
    distiller_memory = measure_memory(distiller, first, args, device)
    plain_teacher = None
    if converted:
        # the teacher as before the options, for the saving: a float32
        # twin in the default layout (made after the memory was measured;
        # a half teacher.dtype has stored its layers' weights in that dtype
        # by then, which float() takes back, for timing only)
        twin = copy.deepcopy(distiller.teacher).float().to(
            memory_format=torch.contiguous_format)
        plain_teacher = TeacherRunner(
            twin, FeatureRecorder(twin, distiller.teacher_recorder.taps,
                                  'teacher'))
    # Time: every part on every batch, interleaved.
    student = build_student(cfg)
    student.load_state_dict(weights)
    student.to(device)
    timer = measure_interleaved(student, distiller, plain_teacher, batches,
                                args, device)
    alone = dict(sec_per_iter=timer.median('student'),
                 mean_sec_per_iter=timer.mean('student'),
                 peak_memory_mb=student_memory)
    distilled = dict(
        sec_per_iter=timer.median('distiller'),
        mean_sec_per_iter=timer.mean('distiller'),
        peak_memory_mb=distiller_memory,
        teacher_to_deepest_tap_sec=timer.median('teacher_to_tap'),
        teacher_full_forward_sec=timer.median('teacher_full'))
    from mmdistill.analysis.memory import tensor_bytes
    teacher = dict(
        options,
        to_tap_sec=timer.median('teacher_to_tap'),
        weights_mb=tensor_bytes([
            *distiller.teacher.parameters(), *distiller.teacher.buffers()
        ]) / 2**20)
    if plain_teacher is not None:
        teacher['to_tap_float32_sec'] = timer.median(
            'teacher_to_tap_float32')
        teacher['saving'] = teacher['to_tap_float32_sec'] / teacher[
            'to_tap_sec']
    pairs = {'+'.join(names): timer.median(f'pair/{"+".join(names)}')
             for names in pair_units(distiller)}
    parts = dict(student_step_sec=alone['sec_per_iter'],
                 teacher_to_deepest_tap_sec=teacher['to_tap_sec'],
                 pairs_sec=pairs)
    parts['sum_sec'] = (parts['student_step_sec'] +
                        parts['teacher_to_deepest_tap_sec'] +
                        sum(pairs.values()))
    floor = parts['student_step_sec'] + parts['teacher_to_deepest_tap_sec']
    result = dict(
        config=args.config,
        device=str(device),
        amp=args.amp,
        amp_dtype=args.amp_dtype,
        input_size=list(size),
        batch_size=args.batch_size,
        iters=args.iters,
        torch_threads=torch.get_num_threads(),
        torch_version=torch.__version__,
        student=alone,
        distiller=distilled,
        teacher=teacher,
        parts=parts,
        time_ratio=distilled['sec_per_iter'] / alone['sec_per_iter'],
        distiller_over_parts=distilled['sec_per_iter'] / parts['sum_sec'],
        distiller_over_floor=distilled['sec_per_iter'] / floor,
        memory_ratio=distilled['peak_memory_mb'] / alone['peak_memory_mb'],
        memory_measure=('peak allocated in a training step, each model '
                        'trained alone' + (
                            '' if device.type == 'cuda' else
                            ' (CPU: state held + peak of the step\'s '
                            'allocations, torch profiler)')))
    print(format_result(result))
    if args.out:
        if osp.dirname(args.out):
            os.makedirs(osp.dirname(args.out), exist_ok=True)
        with open(args.out, 'w') as f:
            json.dump(result, f, indent=1)
        print(f'written to {args.out}')
    return result


def format_result(r: dict) -> str:
    s, d, p, t = r['student'], r['distiller'], r['parts'], r['teacher']
    labels = {name: f'  pair {name} (conn.+loss f+b)'
              for name in p['pairs_sec']}
    w = max([34] + [len(label) + 1 for label in labels.values()])
    precision = [f'AMP {r["amp_dtype"]}'] if r['amp'] else []
    if t.get('dtype'):
        precision.append(f'teacher {t["dtype"]}')
    if t.get('channels_last'):
        precision.append('teacher channels_last')
    lines = [
        f'{r["config"]}',
        f'{r["device"]}, batch {r["batch_size"]} x {r["input_size"][0]}x'
        f'{r["input_size"][1]}, {r["iters"]} timed steps, '
        + ', '.join(precision + [f'{r["torch_threads"]} threads']),
        f'{"":{w}}{"s/iter":>10}{"ratio":>8}{"memory MB":>12}{"ratio":>8}',
        f'{"student alone":{w}}{s["sec_per_iter"]:>10.4f}{1.0:>8.2f}'
        f'{s["peak_memory_mb"]:>12.0f}{1.0:>8.2f}',
        f'{"distiller":{w}}{d["sec_per_iter"]:>10.4f}{r["time_ratio"]:>8.2f}'
        f'{d["peak_memory_mb"]:>12.0f}{r["memory_ratio"]:>8.2f}',
        'parts (same batches):',
        f'{"  student training step":{w}}{p["student_step_sec"]:>10.4f}',
        f'{"  teacher to deepest tap":{w}}'
        f'{p["teacher_to_deepest_tap_sec"]:>10.4f}',
    ]
    for name, sec in p['pairs_sec'].items():
        lines.append(f'{labels[name]:{w}}'
                     f'{sec:>10.4f}')
    lines += [
        f'{"  sum of parts":{w}}{p["sum_sec"]:>10.4f}',
        f'{"distiller / sum of parts":{w}}{r["distiller_over_parts"]:>10.2f}',
        f'{"distiller / (student + teacher)":{w}}'
        f'{r["distiller_over_floor"]:>10.2f}',
        f'{"teacher full forward":{w}}{d["teacher_full_forward_sec"]:>10.4f}',
        f'{"teacher weights (MB, in the memory)":{w}}'
        f'{t["weights_mb"]:>10.0f}',
    ]
    if 'saving' in t:
        lines.append(
            f'{"teacher to tap in float32":{w}}'
            f'{t["to_tap_float32_sec"]:>10.4f}  (saving '
            f'{t["saving"]:.2f}x with the options above)')
    lines.append(f'memory: {r["memory_measure"]}')
    return '\n'.join(lines)


if __name__ == '__main__':
    sys.exit(0 if main() else 1)
