"""mmdistill end to end on generated data: teacher, student, distilled ones.

For a segmentor (PSPNet, ResNet-50-like teacher -> ResNet-18-like student),
a detector (RetinaNet, same pair of backbones) and an image classifier
(mmpretrain ``ImageClassifier``, ResNet-18 at half width -> ResNet-18 at an
eighth of the width, on crops of the scenes' objects) this script

1. writes the generated scenes (``write_synth_dataset`` of
   ``demo/synthetic.py``, real photo content from scikit-image, the
   ``[demo]`` extra, when it is installed), and cuts every object out into a
   32x32 crop for the classifier (``write_crops``);
2. trains the teacher (once, with the first seed);
3. per seed, trains the student alone and distils it with two methods: the
   MLP connector + L2 loss (the MLP-connector paper, Liu et al., ICCV-W
   2023) and CWD on the logits for the segmentor, the MLP connector and FGD
   on the FPN for the detector, KD and DKD on the logits for the classifier;
   all in mmengine's Runner with the configs of ``demo/configs/``;
4. evaluates every model with the standard evaluators (mmseg ``IoUMetric``
   mIoU, mmdet ``CocoMetric`` bbox mAP, mmpretrain ``Accuracy`` top-1) on
   the validation split, reloads the student-only checkpoints of the first
   seed with plain mmseg/mmdet/mmpretrain and checks that they give the same
   metric;
5. prints one table (mean +- std over the seeds, gain over the student,
   fraction of the teacher-student gap closed, seconds per training
   iteration) and writes it as ``results.json`` and ``results.png`` in the
   work dir.

Usage::

    python demo/run_demo.py [--fast] [--seeds 0 1 2] [--work-dir DIR]
                            [--tasks seg det cls]
                            [--methods mlp cwd fgd kd dkd]
                            [--threads 1] [--retrain]

``--tasks`` and ``--methods`` select what runs (the teacher and the student
alone of a selected task always run); ``--fast`` (or ``DEMO_FAST=1``) runs a
few iterations of each model on a few images to check the pipeline in
minutes; its numbers mean nothing.
"""
import argparse
import copy
import json
import os
import os.path as osp
import statistics
import sys
import textwrap
import time
from typing import Dict, List, Optional

import torch
from mmengine.config import Config
from mmengine.hooks import Hook
from mmengine.logging import MMLogger, print_log

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
CONFIGS = osp.join(REPO, 'demo', 'configs')
if REPO not in sys.path:  # demo.synthetic, the scene writer
    sys.path.insert(0, REPO)

# What runs for each task: config files, the metric reported, and the two
# distillation methods.
TASKS = {
    'seg': dict(
        title='PSPNet R50 -> R18 (segmentation)',
        metric='mIoU',
        scale=1.0,  # IoUMetric reports percent
        unit='mIoU (%)',
        configs=dict(
            teacher='seg/pspnet_r50-w16_teacher_synth.py',
            student='seg/pspnet_r18-w8_student_synth.py',
            mlp='seg/mlp_backbone_pspnet_r50-r18_synth.py',
            cwd='seg/cwd_logits_pspnet_r50-r18_synth.py'),
        labels=dict(
            teacher='teacher PSPNet R50 (w16)',
            student='student PSPNet R18 (w8) alone',
            mlp='student + MLP/L2',
            cwd='student + CWD on logits')),
    'det': dict(
        title='RetinaNet R50 -> R18 (detection)',
        metric='coco/bbox_mAP',
        scale=100.0,  # CocoMetric reports fractions
        unit='bbox mAP (%)',
        configs=dict(
            teacher='det/retinanet_r50-w16_teacher_synth.py',
            student='det/retinanet_r18-w8_student_synth.py',
            mlp='det/mlp_fpn_retinanet_r50-r18_synth.py',
            fgd='det/fgd_fpn_retinanet_r50-r18_synth.py'),
        labels=dict(
            teacher='teacher RetinaNet R50 (w16)',
            student='student RetinaNet R18 (w8) alone',
            mlp='student + MLP/L2',
            fgd='student + FGD (inherits FPN/head)')),
    'cls': dict(
        title='ResNet-18 w32 -> w8 (classification of object crops)',
        metric='accuracy/top1',
        scale=1.0,  # mmpretrain's Accuracy reports percent
        unit='top-1 accuracy (%)',
        configs=dict(
            teacher='cls/resnet18-w32_teacher_synth.py',
            student='cls/resnet18-w8_student_synth.py',
            kd='cls/kd_logits_resnet18-w32-w8_synth.py',
            dkd='cls/dkd_logits_resnet18-w32-w8_synth.py'),
        labels=dict(
            teacher='teacher ResNet-18 (w32)',
            student='student ResNet-18 (w8) alone',
            kd='student + KD (tau 4)',
            dkd='student + DKD (tau 4, beta 2)')),
}

# Data and schedules. Full: the numbers of the README table. Fast: the
# pipeline check of the test suite.
SETTINGS = {
    'full': dict(
        data=dict(
            seg=dict(size=(64, 64), splits=dict(train=400, val=100)),
            det=dict(size=(96, 96), splits=dict(train=400, val=100)),
            # scenes of one or two larger objects; every object is cut out
            # into a crop x crop image; 1000 validation scenes (about 1500
            # crops: 200 gave 310, whose sampling noise alone was +-2.6
            # points)
            cls=dict(size=(64, 64), splits=dict(train=1500, val=1000),
                     crop=32, scene=dict(max_objects=2,
                                         scale_range=(0.35, 0.6)))),
        iters=dict(
            seg=dict(teacher=800, student=400),
            det=dict(teacher=1500, student=600),
            cls=dict(teacher=1500, student=1000)),
        batch_size=dict(seg=8, det=8, cls=32)),
    'fast': dict(
        data=dict(
            seg=dict(size=(64, 64), splits=dict(train=8, val=4)),
            det=dict(size=(96, 96), splits=dict(train=8, val=4)),
            cls=dict(size=(64, 64), splits=dict(train=8, val=4), crop=32,
                     scene=dict(max_objects=2, scale_range=(0.35, 0.6)))),
        iters=dict(
            seg=dict(teacher=3, student=2),
            det=dict(teacher=3, student=2),
            cls=dict(teacher=3, student=2)),
        batch_size=2,
        # a detector trained for 2 iterations scores every box below the
        # usual 0.05; keep them so that the evaluator has boxes to score
        det_score_thr=0.0),
}

# Scene options of the generated data (all tasks; a task's 'scene' in its
# data settings overrides some).
SCENE = dict(
    max_objects=5,
    min_objects=1,
    scale_range=(0.25, 0.6),
    clutter=3,
    distractors=2,
    random_tint=False,
    tint_jitter=40)
DATA_SEED = 0


class DemoRecorder(Hook):
    """Keeps the last validation metrics, and the wall-clock and process CPU
    time of every training iteration (data loading included). On a shared
    machine the CPU time varies less than the wall time."""
    priority = 'VERY_LOW'

    def __init__(self) -> None:
        self.metrics: Dict[str, float] = {}
        self.iter_times: List[float] = []
        self.cpu_times: List[float] = []
        self._start = None

    def before_train_iter(self, runner, batch_idx, data_batch=None) -> None:
        self._start = (time.perf_counter(), time.process_time())

    def after_train_iter(self, runner, batch_idx, data_batch=None,
                         outputs=None) -> None:
        if self._start is not None:
            wall, cpu = self._start
            self.iter_times.append(time.perf_counter() - wall)
            self.cpu_times.append(time.process_time() - cpu)
            self._start = None

    def after_val_epoch(self, runner, metrics=None) -> None:
        self.metrics = dict(metrics or {})

    def after_test_epoch(self, runner, metrics=None) -> None:
        self.metrics = dict(metrics or {})

    @staticmethod
    def _median(times: List[float]) -> float:
        """Median over the iterations after the first 3 (warm-up)."""
        times = times[3:] or times
        return statistics.median(times) if times else float('nan')

    def seconds_per_iter(self) -> float:
        return self._median(self.iter_times)

    def cpu_seconds_per_iter(self) -> float:
        return self._median(self.cpu_times)


def numeric(metrics: dict) -> Dict[str, float]:
    """The scalar entries of an evaluator's output as Python floats."""
    out = {}
    for key, value in metrics.items():
        try:
            out[key] = float(value)
        except (TypeError, ValueError):
            continue
    return out


def metric_of(metrics: dict, task: str) -> float:
    """The task's metric; mmdet's CocoMetric returns nothing when a model
    detects no box at all, which scores 0."""
    return metrics.get(TASKS[task]['metric'], 0.0)


def set_schedule(cfg: Config, iters: int) -> None:
    """``iters`` iterations: validate and checkpoint at the end, warm up
    for the first 10 % and decay the learning rate until the end; a
    distillation loss with a warm-up of its own (DKD) warms up over the
    same 10 %."""
    cfg.train_cfg.max_iters = iters
    cfg.train_cfg.val_interval = iters
    cfg.default_hooks.checkpoint.interval = iters
    cfg.default_hooks.logger.interval = max(1, min(10, iters // 10))
    warmup = max(1, iters // 10)
    schedulers = cfg.param_scheduler
    schedulers[0].end = warmup
    schedulers[1].begin = warmup
    schedulers[1].end = iters
    if cfg.model.type == 'mmdistill.SingleTeacherDistiller':
        for pair in cfg.model.distill.values():
            if 'warmup_iters' in pair.get('loss', {}):
                pair.loss.warmup_iters = warmup


def point_data(cfg: Config, data_root: str, batch_size: int) -> None:
    """Read the generated data of ``data_root``."""
    cfg.train_dataloader.batch_size = batch_size
    for key in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        cfg[key].dataset.data_root = data_root
    for key in ('val_evaluator', 'test_evaluator'):
        evaluator = cfg[key]
        if 'ann_file' in evaluator:
            evaluator.ann_file = osp.join(data_root, 'annotations',
                                          'val.json')


def build_cfg(task: str, role: str, data_root: str, work_dir: str,
              seed: int, iters: int, batch_size: int,
              teacher_ckpt: Optional[str] = None,
              score_thr: Optional[float] = None) -> Config:
    cfg = Config.fromfile(osp.join(CONFIGS, TASKS[task]['configs'][role]))
    point_data(cfg, data_root, batch_size)
    set_schedule(cfg, iters)
    cfg.work_dir = work_dir
    cfg.randomness = dict(seed=seed)
    cfg.experiment_name = f'{task}_{role}_seed{seed}_{time.time_ns()}'
    cfg.default_hooks.pop('visualization', None)
    if cfg.model.type == 'mmdistill.SingleTeacherDistiller':
        cfg.model.teacher.checkpoint = teacher_ckpt
    if task == 'det' and score_thr is not None:
        model = cfg.model.get('student', cfg.model)
        model.test_cfg.score_thr = score_thr
    return cfg


def config_digest(cfg: Config, depends: str = '', root: str = '') -> str:
    """A digest of everything that decides a run (not where it is written):
    the config with the demo's work dir ``root`` left out of its paths, and
    ``depends`` (the data, the teacher's run)."""
    import hashlib
    plain = copy.deepcopy(cfg._cfg_dict.to_dict())
    for key in ('work_dir', 'experiment_name'):
        plain.pop(key, None)
    text = json.dumps(plain, sort_keys=True, default=str)
    if root:
        text = text.replace(root, '<work_dir>')
    text += depends
    return hashlib.sha1(text.encode()).hexdigest()


def run(cfg: Config, depends: str = '', reuse: bool = True,
        root: str = '') -> dict:
    """Train ``cfg`` in mmengine's Runner (validated at the end).

    The result is kept in ``<work_dir>/demo_result.json``; with ``reuse`` a
    finished run of the same config, data and teacher is not trained again.
    The folder of a run with other settings is replaced.
    """
    import shutil
    from mmengine.runner import Runner
    digest = config_digest(cfg, depends, root)
    record = osp.join(cfg.work_dir, 'demo_result.json')
    iters = cfg.train_cfg.max_iters
    paths = dict(checkpoint=osp.join(cfg.work_dir, f'iter_{iters}.pth'))
    student = osp.join(cfg.work_dir, f'iter_{iters}_student.pth')
    if cfg.model.type == 'mmdistill.SingleTeacherDistiller':
        paths.update(
            student_checkpoint=student,
            student_config=osp.join(cfg.work_dir, 'student_config.py'))
    if osp.isdir(cfg.work_dir):
        previous = {}
        if osp.exists(record):
            with open(record) as f:
                previous = json.load(f)
        if (reuse and previous.get('digest') == digest
                and all(osp.exists(p) for p in paths.values())):
            print_log(f'{cfg.work_dir}: reusing the finished run',
                      logger='current')
            previous.update(paths)  # the folder may have moved
            return previous
        print_log(f'{cfg.work_dir}: removing an earlier run (other settings '
                  'or unfinished)', logger='current')
        shutil.rmtree(cfg.work_dir)
    runner = Runner.from_cfg(cfg)
    recorder = DemoRecorder()
    runner.register_hook(recorder)
    start = time.perf_counter()
    runner.train()
    wall = time.perf_counter() - start
    result = dict(
        metrics=numeric(recorder.metrics),
        sec_per_iter=recorder.seconds_per_iter(),
        cpu_sec_per_iter=recorder.cpu_seconds_per_iter(),
        wall_s=wall,
        iters=iters,
        torch_threads=torch.get_num_threads(),
        digest=digest,
        **paths)
    del runner
    MMLogger._instance_dict.clear()
    with open(record, 'w') as f:
        json.dump(result, f, indent=1)
    return result


def reevaluate(config: str, checkpoint: str, work_dir: str) -> dict:
    """Test a student-only checkpoint with its plain mmdet/mmseg config
    (``student_config.py``) in a fresh Runner."""
    from mmengine.runner import Runner
    cfg = Config.fromfile(config)
    cfg.work_dir = work_dir
    cfg.load_from = checkpoint
    cfg.experiment_name = f'reeval_{time.time_ns()}'
    cfg.pop('custom_hooks', None)
    cfg.default_hooks.pop('visualization', None)
    runner = Runner.from_cfg(cfg)
    metrics = runner.test()
    del runner
    MMLogger._instance_dict.clear()
    return numeric(metrics)


def batch_size_of(settings: dict, task: str) -> int:
    """The training batch size of ``task`` (one for all tasks, or per
    task)."""
    batch = settings['batch_size']
    return batch[task] if isinstance(batch, dict) else batch


def write_data(task: str, root: str, settings: dict) -> str:
    """Write the generated data of ``task`` under ``root`` (unless the same
    data is there): scenes for segmentation and detection, scenes cut into
    one crop per object for classification."""
    from demo.synthetic import write_crops, write_synth_dataset
    spec = settings['data'][task]
    data_root = osp.join(root, f'data_{task}')
    marker = osp.join(data_root, 'generated.json')
    scene = dict(SCENE, **spec.get('scene', {}))
    wanted = dict(spec, seed=DATA_SEED, scene=scene)
    wanted = json.loads(json.dumps(wanted))
    if osp.exists(marker):
        with open(marker) as f:
            if json.load(f) == wanted:
                print_log(f'{task}: data already in {data_root}',
                          logger='current')
                return data_root
    start = time.perf_counter()
    scenes = osp.join(data_root, 'scenes') if 'crop' in spec else data_root
    written = write_synth_dataset(
        scenes, spec['splits'], size=tuple(spec['size']), seed=DATA_SEED,
        photos=True, **scene)
    photos = next(iter(written.values()))['photos']
    what = f'{spec["splits"]} images of {spec["size"]}'
    if 'crop' in spec:
        crops = write_crops(scenes, data_root, list(spec['splits']),
                            size=spec['crop'])
        counts = {split: v['count'] for split, v in crops.items()}
        what = (f'{counts} crops of {spec["crop"]}x{spec["crop"]} from '
                f'{what}')
    with open(marker, 'w') as f:
        json.dump(wanted, f)
    print_log(
        f'{task}: wrote {what} to {data_root} '
        f'({"photo" if photos else "procedural"} content, '
        f'{time.perf_counter() - start:.1f}s)', logger='current')
    return data_root


def merge(base: dict, update: dict) -> dict:
    """Merge the nested dict ``update`` into ``base``."""
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            merge(base[key], value)
        else:
            base[key] = value
    return base


def data_marker(data_root: str) -> str:
    with open(osp.join(data_root, 'generated.json')) as f:
        return f.read()


def summarise(values: List[float]) -> dict:
    mean = statistics.fmean(values)
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return dict(mean=mean, std=std, values=values)


def build_table(results: dict) -> dict:
    """Per task and row: mean/std of the metric (in %), gain over the
    student alone, fraction of the teacher-student gap closed, s/iter."""
    table = {}
    for task, runs in results.items():
        spec = TASKS[task]
        rows = {}
        for role, per_seed in runs.items():
            metric = [spec['scale'] * metric_of(r['metrics'], task)
                      for r in per_seed]
            rows[role] = dict(
                label=spec['labels'][role],
                metric=summarise(metric),
                sec_per_iter=statistics.fmean(
                    r['sec_per_iter'] for r in per_seed),
                cpu_sec_per_iter=statistics.fmean(
                    r['cpu_sec_per_iter'] for r in per_seed),
                seeds=[r['seed'] for r in per_seed])
        teacher = rows['teacher']['metric']['mean']
        student = rows['student']['metric']
        for role, row in rows.items():
            if role in ('teacher', 'student'):
                continue
            gain = row['metric']['mean'] - student['mean']
            gap = teacher - student['mean']
            row['gain'] = gain
            row['gap_closed'] = gain / gap if gap > 0 else float('nan')
            # "real": the mean gain exceeds the spread of either row
            row['beats_student'] = gain > max(student['std'],
                                              row['metric']['std'])
        table[task] = dict(
            title=spec['title'], metric=spec['metric'], unit=spec['unit'],
            rows=rows)
    return table


def format_table(table: dict) -> str:
    lines = []
    head = (f'{"model":<34} {"metric (mean +- std)":>21} {"gain":>7} '
            f'{"gap closed":>10} {"s/iter":>7} {"cpu s/iter":>10}')
    for task, spec in table.items():
        lines.append(f'\n{spec["title"]}: {spec["unit"]} on the validation '
                     'split')
        lines.append(head)
        lines.append('-' * len(head))
        for role, row in spec['rows'].items():
            m = row['metric']
            metric = f'{m["mean"]:.2f} +- {m["std"]:.2f}'
            gain = f'{row["gain"]:+.2f}' if 'gain' in row else ''
            gap = (f'{100 * row["gap_closed"]:.0f}%'
                   if 'gap_closed' in row else '')
            lines.append(f'{row["label"]:<34} {metric:>21} {gain:>7} '
                         f'{gap:>10} {row["sec_per_iter"]:>7.3f} '
                         f'{row["cpu_sec_per_iter"]:>10.3f}')
    return '\n'.join(lines)


def plot(table: dict, path: str) -> None:
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(
        1, len(table), figsize=(5.5 * len(table), 4.2), squeeze=False)
    colors = ['#4c72b0', '#8c8c8c', '#55a868', '#c44e52', '#8172b2']
    for ax, (task, spec) in zip(axes[0], table.items()):
        rows = list(spec['rows'].values())
        means = [r['metric']['mean'] for r in rows]
        stds = [r['metric']['std'] for r in rows]
        ax.bar(range(len(rows)), means, yerr=stds, capsize=4,
               color=colors[:len(rows)])
        for i, r in enumerate(rows):
            ax.text(i, means[i] + stds[i], f'{means[i]:.1f}', ha='center',
                    va='bottom', fontsize=8)
        ax.set_xticks(range(len(rows)))
        ax.set_xticklabels(
            [textwrap.fill(r['label'], 16) for r in rows], fontsize=7)
        ax.set_ylabel(spec['unit'])
        ax.set_title(spec['title'], fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def methods_of(task: str) -> List[str]:
    """The distillation methods the demo has configs for in ``task``."""
    return [role for role in TASKS[task]['configs']
            if role not in ('teacher', 'student')]


def methods_per_task() -> str:
    """``'seg: mlp cwd; det: ...'``, for messages."""
    return '; '.join(f'{task}: {" ".join(methods_of(task))}'
                     for task in TASKS)


def check_methods(parser, tasks: List[str],
                  methods: Optional[List[str]]) -> None:
    """Stop (argparse's usage error) on a ``--methods`` name that has no
    config in any of ``tasks``: a typo would otherwise run only the teacher
    and the student alone."""
    if not methods:
        return
    chosen = {m for task in tasks for m in methods_of(task)}
    wrong = [m for m in methods if m not in chosen]
    if wrong:
        known = {m for task in TASKS for m in methods_of(task)}
        what = ', '.join(
            f'{m!r} (unknown method)' if m not in known else
            f'{m!r} (no config for --tasks {" ".join(tasks)})'
            for m in wrong)
        parser.error(f'--methods {what}. The methods per task are '
                     f'{methods_per_task()}.')


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument(
        '--fast', action='store_true',
        help='a few iterations on a few images (pipeline check); also '
        'DEMO_FAST=1')
    parser.add_argument(
        '--seeds', type=int, nargs='+', default=None,
        help='training seeds of the students (default: 0 1 2; fast: 0)')
    parser.add_argument(
        '--work-dir', default=osp.join('work_dirs', 'demo'),
        help='where data, checkpoints, logs and results go')
    parser.add_argument(
        '--tasks', nargs='+', choices=list(TASKS), default=list(TASKS),
        help='tasks to run (default: all: seg det cls)')
    parser.add_argument(
        '--methods', nargs='+', default=None,
        help='distil only with these methods (default: all of the chosen '
        'tasks; per task: ' + methods_per_task() + '); each must be one '
        'of a chosen task; the teacher and the student alone always run')
    parser.add_argument(
        '--settings', type=json.loads, default=None,
        help='JSON merged into the data/schedule settings, e.g. '
        '\'{"iters": {"det": {"teacher": 1200}}}\'')
    parser.add_argument(
        '--retrain', action='store_true',
        help='train every model again (by default a finished run with the '
        'same config, data and teacher in the work dir is reused)')
    parser.add_argument(
        '--threads', type=int, default=1,
        help='torch CPU threads (default 1: the README numbers were '
        'measured so, and one thread per process copes best with a shared '
        'machine; 0 keeps torch\'s choice)')
    args = parser.parse_args(argv)
    check_methods(parser, args.tasks, args.methods)
    fast_env = os.environ.get('DEMO_FAST', '')
    args.fast = args.fast or fast_env not in ('', '0')
    if args.seeds is None:
        args.seeds = [0] if args.fast else [0, 1, 2]
    return args


def main(argv=None) -> dict:
    args = parse_args(argv)
    import mmdistill  # noqa: F401  registries, checkpoint allowlist
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    settings = copy.deepcopy(SETTINGS['fast' if args.fast else 'full'])
    if args.settings:
        merge(settings, args.settings)
    root = osp.abspath(args.work_dir)
    os.makedirs(root, exist_ok=True)
    logger = MMLogger.get_instance(
        'mmdistill_demo', log_file=osp.join(root, 'demo.log'))
    logger.info(f'mmdistill demo ({"fast" if args.fast else "full"}), '
                f'seeds {args.seeds}, work dir {root}')
    start = time.perf_counter()
    results, checks = {}, []
    for task in args.tasks:
        spec = TASKS[task]
        iters = settings['iters'][task]
        data_root = write_data(task, root, settings)
        task_dir = osp.join(root, task)
        runs = {}
        logger.info(f'{task}: training the teacher ({iters["teacher"]} '
                    'iterations)')
        data_digest = data_marker(data_root)
        teacher = run(
            build_cfg(task, 'teacher', data_root,
                      osp.join(task_dir, 'teacher'), args.seeds[0],
                      iters['teacher'], batch_size_of(settings, task),
                      score_thr=settings.get('det_score_thr')),
            depends=data_digest, reuse=not args.retrain, root=root)
        teacher['seed'] = args.seeds[0]
        runs['teacher'] = [teacher]
        for role in spec['configs']:
            if role == 'teacher' or (args.methods and role != 'student'
                                     and role not in args.methods):
                continue
            runs[role] = []
            for seed in args.seeds:
                logger.info(f'{task}: {spec["labels"][role]}, seed {seed} '
                            f'({iters["student"]} iterations)')
                result = run(
                    build_cfg(task, role, data_root,
                              osp.join(task_dir, f'{role}_seed{seed}'), seed,
                              iters['student'],
                              batch_size_of(settings, task),
                              teacher['checkpoint'],
                              settings.get('det_score_thr')),
                    depends=data_digest + teacher['digest'],
                    reuse=not args.retrain, root=root)
                result['seed'] = seed
                runs[role].append(result)
                logger.info(
                    f'{task}: {role} seed {seed}: {spec["metric"]} = '
                    f'{metric_of(result["metrics"], task):.4f}'
                    f', {result["sec_per_iter"]:.3f} s/iter')
        # Plain mmdet/mmseg on the exported student-only checkpoints.
        for role, per_seed in runs.items():
            first = per_seed[0]
            if 'student_checkpoint' not in first:
                continue
            metrics = reevaluate(
                first['student_config'], first['student_checkpoint'],
                osp.join(task_dir, f'{role}_seed{first["seed"]}',
                         'reevaluate'))
            expected = metric_of(first['metrics'], task)
            got = metric_of(metrics, task)
            checks.append(
                dict(task=task, role=role, seed=first['seed'],
                     checkpoint=first['student_checkpoint'],
                     config=first['student_config'], metric=spec['metric'],
                     trained=expected, reloaded=got,
                     equal=abs(expected - got) < 1e-6))
            logger.info(f'{task}: {role} student-only checkpoint reloaded in '
                        f'plain {cfg_scope(first["student_config"])}: '
                        f'{spec["metric"]} {got:.4f} (trained {expected:.4f})')
        results[task] = runs
    table = build_table(results)
    total = time.perf_counter() - start
    out = dict(
        mode='fast' if args.fast else 'full',
        seeds=args.seeds,
        settings=settings,
        scene=SCENE,
        torch_threads=torch.get_num_threads(),
        total_s=total,
        train_wall_s=sum(r['wall_s'] for runs in results.values()
                         for per_seed in runs.values() for r in per_seed),
        table=table,
        runs=results,
        reload_checks=checks)
    json_path = osp.join(root, 'results.json')
    with open(json_path, 'w') as f:
        json.dump(out, f, indent=1)
    png_path = osp.join(root, 'results.png')
    plot(table, png_path)
    text = format_table(table)
    print(text)
    logger.info('results' + text)
    for check in checks:
        status = 'same metric' if check['equal'] else 'DIFFERENT METRIC'
        print(f'reloaded {check["checkpoint"]}: {status}')
    print(f'\ntotal {total / 60:.1f} min; table: {json_path}, chart: '
          f'{png_path}')
    if not all(c['equal'] for c in checks):
        sys.exit('A student-only checkpoint did not reproduce its metric.')
    return out


def cfg_scope(config: str) -> str:
    return Config.fromfile(config).get('default_scope', '?')


if __name__ == '__main__':
    main()
