"""Test (and evaluate) a checkpoint with mmengine's Runner.

Usage: python tools/test.py CONFIG CHECKPOINT [--work-dir DIR] [--out FILE]
       [--out-item {metrics,pred}] [--show] [--show-dir DIR] [--interval N]
       [--tta] [--amp] [--no-pin-memory] [--cfg-options KEY=VALUE ...]
       [--launcher {none,pytorch,slurm,mpi}]

CONFIG and CHECKPOINT may be

* a distillation config with a runner checkpoint of it (``iter_N.pth``,
  ``epoch_N.pth``, ``best_*.pth``): the student is tested alone (the
  distiller's ``predict`` runs the student only), so the teacher is neither
  built nor downloaded;
* a student config (the ``student_config.py`` that ``StudentCheckpointHook``
  writes, or the student's own mmdet/mmseg/mmpretrain config) with a
  student-only checkpoint (``*_student.pth``, ``publish_model.py`` output) or
  a runner checkpoint of a distiller (its student is taken).

Both give the same predictions and metrics. ``--out`` dumps the predictions
to a ``.pkl`` file; for an mmseg config a folder instead keeps the predicted
label maps (mmseg's ``IoUMetric(output_dir=...)``). ``--show-dir`` paints
the predictions where, and as often as, the config's own codebase's
``tools/test.py`` does (see ``--help``: mmseg's and mmpretrain's save
relative to the current directory, mmdet's under the work dir). Several
processes: ``tools/dist_test.sh CONFIG CHECKPOINT N``.

``--tta`` and the options of mmpretrain's ``test.py`` (``--out-item``,
``--amp``, ``--no-pin-memory``) also do what the config's own codebase's
``tools/test.py`` does (see ``--help``). On a distillation config,
``--cfg-options`` keys of the student are ``model.student.<key>``; a
stock-style ``model.<key>`` that the test would not use stops the run.
The config tested is dumped into the work dir as the stock tools do, under
the given config's file name (``<name>_student.py`` for a distillation
config: training's dump of the distillation config keeps its name).
"""
import argparse
import inspect
import os
import os.path as osp
import sys
from copy import deepcopy
from typing import Optional

from mmengine.config import Config, ConfigDict, DictAction
from mmengine.logging import print_log
from mmengine.runner import Runner

PICKLE_EXTENSIONS = ('.pkl', '.pickle')
#: the files ``--out-item metrics`` writes (what ``mmengine.dump`` reads)
METRIC_EXTENSIONS = ('.json', '.yaml', '.yml') + PICKLE_EXTENSIONS
#: the keys of a distiller's config that are not the student's; everything
#: else under ``model.`` of a distillation config is not used in a test
DISTILLER_KEYS = ('type', 'student', 'teacher', 'distill')
#: the visualization hook of each codebase (by the config's default_scope)
VISUALIZATION_HOOKS = dict(
    mmdet='DetVisualizationHook',
    mmseg='SegVisualizationHook',
    mmpretrain='VisualizationHook')


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description='Test (and evaluate) a distiller or a student')
    parser.add_argument('config', help='test config file path')
    parser.add_argument('checkpoint', help='checkpoint file (path or URL)')
    parser.add_argument(
        '--work-dir',
        help='the directory to save logs and the file of evaluation metrics')
    parser.add_argument(
        '--out',
        help='dump the predictions to this .pkl file for offline evaluation '
        '(mmseg configs: or a folder for the predicted label maps)')
    parser.add_argument(
        '--out-item',
        choices=['metrics', 'pred'],
        help='as mmpretrain\'s test.py, for every codebase: what --out gets. '
        'pred (default): the predictions, as above; metrics: the metrics '
        'instead, as a .json, .yaml or .pkl file (mmengine.dump)')
    parser.add_argument(
        '--show', action='store_true', help='show the prediction results')
    parser.add_argument(
        '--show-dir',
        metavar='DIR',
        help='save images painted with the predictions, where and how often '
        'each codebase\'s own test.py does. mmdet configs: into '
        'work_dir/<timestamp>/DIR (DIR itself when absolute), every test '
        'image. mmseg configs: DIR is the visualizer\'s save_dir, relative '
        'to the current directory; the images go to DIR/vis_data/vis_image/ '
        '(beside a copy of the run\'s config in DIR/vis_data/), '
        'and only test batches N, 2N, ... are drawn, N = '
        'default_hooks.visualization.interval (50 in mmseg\'s configs: none '
        'for fewer than 50 batches; --cfg-options '
        'default_hooks.visualization.interval=1 draws every batch). '
        'mmpretrain configs: into DIR, relative to the current directory, '
        'every --interval-th test image')
    parser.add_argument(
        '--interval',
        type=int,
        default=None,
        metavar='N',
        help='mmpretrain configs, as mmpretrain\'s test.py: with --show/'
        '--show-dir, draw every N-th test image (default 1)')
    parser.add_argument(
        '--wait-time', type=float, default=2, help='the interval of show (s)')
    parser.add_argument(
        '--tta',
        action='store_true',
        help='test-time augmentation: the model wrapped in the config\'s '
        'tta_model, the test data through its tta_pipeline. Missing ones '
        'are filled in as each codebase\'s own test.py does: mmdet '
        'configs: DetTTAModel (nms 0.5, 100 boxes) and a horizontal flip '
        'of the test pipeline (with a warning); mmpretrain configs: '
        'AverageClsScoreTTA and a horizontal flip; mmseg and other configs '
        'need both in the config (mmseg\'s default_runtime.py gives '
        'tta_model, its dataset configs tta_pipeline)')
    parser.add_argument(
        '--amp',
        action='store_true',
        help='automatic mixed precision, as mmpretrain\'s test.py: '
        'test_cfg.fp16=True (mmengine\'s TestLoop runs the model under '
        'autocast: float16 on CUDA, bfloat16 on CPU); the same for mmdet '
        'and mmseg configs')
    parser.add_argument(
        '--no-pin-memory',
        action='store_true',
        help='test_dataloader.pin_memory=False. mmpretrain configs, as '
        'mmpretrain\'s test.py: its test dataloader pins memory (and '
        'collates with default_collate) unless the config says otherwise; '
        'mmdet/mmseg configs pin memory only when the config says so')
    parser.add_argument(
        '--cfg-options',
        nargs='+',
        action=DictAction,
        help='override config settings (key=value), merged into the config '
        'before the student is taken, e.g. '
        'test_dataloader.batch_size=2 model.student.test_cfg.mode=whole. '
        'On a distillation config the student\'s keys are '
        'model.student.<key>: a stock-style model.<key> (other than '
        'model.teacher/model.distill/model.type and the distiller\'s own '
        'arguments) would not reach the tested student and stops the run')
    parser.add_argument(
        '--launcher',
        choices=['none', 'pytorch', 'slurm', 'mpi'],
        default='none',
        help='job launcher')
    # torch.distributed.launch passes --local-rank (torch>=2) or --local_rank.
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    args = parser.parse_args(argv)
    if args.out_item is not None:
        if args.out is None:
            parser.error('--out-item says what --out gets: give --out too')
        if (args.out_item == 'metrics'
                and not args.out.endswith(METRIC_EXTENSIONS)):
            parser.error('--out-item metrics writes the metrics to a file '
                         'ending with ' + ', '.join(METRIC_EXTENSIONS) +
                         f'; got --out {args.out!r}')
    if args.interval is not None:
        if not (args.show or args.show_dir):
            parser.error('--interval sets how often --show/--show-dir '
                         'draw: give one of them too')
        if args.interval < 1:
            parser.error('--interval must be at least 1')
    if 'LOCAL_RANK' not in os.environ:
        os.environ['LOCAL_RANK'] = str(args.local_rank)
    return args


def _hook_parameters(hook_type, scope) -> dict:
    """The ``__init__`` arguments of the visualization hook ``hook_type``
    (name -> ``inspect.Parameter``)."""
    from mmengine.registry import HOOKS, DefaultScope
    cls = hook_type
    if isinstance(hook_type, str):
        with DefaultScope.overwrite_default_scope(scope):
            with HOOKS.switch_scope_and_registry(scope) as registry:
                cls = registry.get(hook_type)
        if cls is None:
            raise KeyError(f'Visualization hook {hook_type!r} is not '
                           f'registered in scope {scope!r}.')
    return dict(inspect.signature(cls).parameters)


def enable_visualization(cfg: Config, args) -> Config:
    """Turn the config's visualization hook on for ``--show``/``--show-dir``
    as each codebase's own ``tools/test.py`` does (mmdet's
    ``DetVisualizationHook``, mmseg's ``SegVisualizationHook``, mmpretrain's
    ``VisualizationHook`` differ in their arguments, in where they save and
    in how often they draw), and log where the images go."""
    scope = cfg.get('default_scope', None)
    hook = (cfg.get('default_hooks', None) or {}).get('visualization', None)
    if hook is None:
        name = VISUALIZATION_HOOKS.get(scope)
        known = ', '.join(f'{h} for {s}'
                          for s, h in VISUALIZATION_HOOKS.items())
        sys.exit('error: --show/--show-dir need a visualization hook in '
                 f'default_hooks; the config (default_scope {scope!r}) has '
                 'none. Add --cfg-options default_hooks.visualization.type='
                 + (f'{name}.' if name else
                    f'HOOK, the hook of its codebase ({known}).'))
    params = _hook_parameters(hook['type'], scope)
    samples = 'out_dir' in params  # mmpretrain: counts images, not batches
    if args.interval is not None:
        if not samples:
            sys.exit(
                f'error: --interval is mmpretrain\'s option; {hook["type"]} '
                + ('draws every test image.' if 'test_out_dir' in params else
                   'draws one batch in default_hooks.visualization.interval: '
                   'set --cfg-options default_hooks.visualization.interval=N.'
                   ))
    hook['draw' if 'draw' in params else 'enable'] = True
    if samples:  # mmpretrain's test.py sets its --interval, default 1
        hook['interval'] = args.interval or 1
    if args.show:
        hook['show'] = True
        if 'wait_time' in params or 'kwargs' in params:
            hook['wait_time'] = args.wait_time
    if not args.show_dir:
        return cfg
    if 'test_out_dir' in params:  # mmdet: under the run's log dir
        hook['test_out_dir'] = args.show_dir
        where = (osp.join(cfg.work_dir, '<timestamp>', args.show_dir) +
                 ', every test image')
    elif samples:  # mmpretrain: as given
        hook['out_dir'] = args.show_dir
        where = (f'{args.show_dir}, every test image' if hook['interval'] == 1
                 else f'{args.show_dir}, every {hook["interval"]}-th test '
                 'image')
    else:  # mmseg: the visualizer's save_dir, as given
        cfg.visualizer['save_dir'] = args.show_dir
        interval = hook.get('interval', None) or getattr(
            params.get('interval'), 'default', None)
        where = osp.join(args.show_dir, 'vis_data', 'vis_image')
        if interval == 1:
            where += ', every test batch'
        elif isinstance(interval, int):
            where += (f', test batches {interval}, {2 * interval}, ... only '
                      f'({hook["type"]}\'s interval; --cfg-options '
                      'default_hooks.visualization.interval=1 draws every '
                      'batch)')
    print_log(f'--show-dir: the painted predictions go to {where}.',
              logger='current')
    return cfg


def _innermost_dataset(cfg: Config) -> ConfigDict:
    """The test dataset of ``cfg`` inside its wrappers (RepeatDataset,
    ...): the one with the pipeline."""
    dataset = cfg.test_dataloader.dataset
    while 'dataset' in dataset:
        dataset = dataset['dataset']
    return dataset


def _flip_tta_pipeline(test_pipeline: list, pack: dict) -> list:
    """``test_pipeline`` with its last transform replaced by a
    ``TestTimeAug`` of a horizontal flip and none, then ``pack``: the
    default ``tta_pipeline`` of mmdet's and mmpretrain's test.py."""
    pipeline = deepcopy(list(test_pipeline))
    pipeline[-1] = dict(
        type='TestTimeAug',
        transforms=[
            [dict(type='RandomFlip', prob=1.),
             dict(type='RandomFlip', prob=0.)],
            [pack],
        ])
    return pipeline


def default_tta(cfg: Config) -> Config:
    """Fill in ``tta_model`` and ``tta_pipeline`` where the config lacks
    them, as the config's own codebase's ``tools/test.py`` does.

    * mmdet (3.3): ``DetTTAModel`` (nms at IoU 0.5, 100 boxes per image)
      and the test pipeline with a horizontal flip before a
      ``PackDetInputs`` that keeps the flip; a warning for each;
    * mmpretrain (1.2.0): ``AverageClsScoreTTA`` and the test pipeline
      with a horizontal flip before its last transform;
    * mmseg (1.2.2) and other codebases: none; the run stops naming what
      is missing.

    Args:
        cfg (Config): The config to test (the student's).

    Returns:
        Config: ``cfg``, with both keys.
    """
    scope = cfg.get('default_scope', None)
    missing = [k for k in ('tta_model', 'tta_pipeline') if k not in cfg]
    if not missing:
        return cfg
    if scope not in ('mmdet', 'mmpretrain'):
        sys.exit(
            f'error: --tta needs {" and ".join(missing)} in the config '
            f'(default_scope {scope!r}). mmdet\'s and mmpretrain\'s '
            'test.py fill in a flip test-time augmentation; mmseg\'s, like '
            'this tool for other codebases, take both from the config '
            '(mmseg: tta_model = dict(type=\'SegTTAModel\') from its '
            'default_runtime.py, tta_pipeline from its dataset configs).')
    test_pipeline = _innermost_dataset(cfg).pipeline
    if scope == 'mmdet':
        for key in missing:
            print_log(f'--tta: no {key} in the config; using mmdet\'s '
                      'default (as its test.py).', logger='current',
                      level=30)
        model = dict(
            type='DetTTAModel',
            tta_cfg=dict(
                nms=dict(type='nms', iou_threshold=0.5), max_per_img=100))
        pack = dict(
            type='PackDetInputs',
            meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape',
                       'scale_factor', 'flip', 'flip_direction'))
    else:
        print_log(f'--tta: no {" and ".join(missing)} in the config; '
                  'using mmpretrain\'s default: AverageClsScoreTTA over '
                  'the image and its horizontal flip (as its test.py).',
                  logger='current')
        model = dict(type='mmpretrain.AverageClsScoreTTA')
        pack = test_pipeline[-1]
    if 'tta_model' not in cfg:
        cfg.tta_model = model
    if 'tta_pipeline' not in cfg:
        cfg.tta_pipeline = _flip_tta_pipeline(test_pipeline, pack)
    return cfg


def enable_tta(cfg: Config) -> Config:
    """Wrap the model in the config's ``tta_model`` and give the test
    dataset the ``tta_pipeline`` (missing ones as :func:`default_tta`).

    Args:
        cfg (Config): The config to test (the student's).

    Returns:
        Config: ``cfg``.
    """
    cfg = default_tta(cfg)
    _innermost_dataset(cfg).pipeline = cfg.tta_pipeline
    cfg.model = ConfigDict(**cfg.tta_model, module=cfg.model)
    return cfg


def _distiller_arguments(model: dict) -> set:
    """The ``__init__`` arguments of the distiller ``model`` builds (its
    ``data_preprocessor`` and ``init_cfg`` left out: the student's are the
    ones a test uses); :data:`DISTILLER_KEYS` when it cannot be found.

    Args:
        model (dict): The distiller's config.

    Returns:
        set: The keys of ``model`` that are not the student's.
    """
    keys = set(DISTILLER_KEYS)
    kind = model.get('type', None)
    try:
        from mmdistill.registry import MODELS
        cls = MODELS.get(kind) if isinstance(kind, str) else kind
        params = inspect.signature(cls).parameters
    except Exception:  # an unknown type fails later, in the build
        return keys
    keys.update(name for name, p in params.items()
                if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD))
    return keys - {'data_preprocessor', 'init_cfg'}


def check_model_options(cfg: Config, options: dict) -> None:
    """Stop when ``--cfg-options`` give a distillation config a stock-style
    ``model.<key>`` (``model.test_cfg.score_thr=...``,
    ``model.data_preprocessor...``): the distiller is not tested, its
    student is, so the key would be silently dropped. The message names
    ``model.student.<key>``. The distiller's own keys (``model.teacher``,
    ``model.distill``, ...) are accepted: they are merged and not used.

    Args:
        cfg (Config): The loaded config, ``options`` merged.
        options (dict): ``--cfg-options``.
    """
    model = cfg.get('model', None)
    if not options or not isinstance(model, dict) or 'student' not in model:
        return
    allowed = _distiller_arguments(model)
    if model.student.get('data_preprocessor') is None:
        # the distiller's data_preprocessor serves a student without one
        # (student_config gives it to the tested student)
        allowed.add('data_preprocessor')
    wrong = [k for k in options
             if k.startswith('model.') and k.split('.')[1] not in allowed]
    if not wrong:
        return
    fixes = ' '.join(f'model.student.{k[len("model."):]}='
                     + _option_text(options[k]) for k in wrong)
    name = osp.basename(cfg.filename) if cfg.filename else 'the config'
    sys.exit(
        f'error: --cfg-options {" ".join(wrong)}: the model of {name} is a '
        'distiller and only its student is tested, so '
        + ('this key' if len(wrong) == 1 else 'these keys')
        + ' would not reach the tested model. The student\'s keys are '
        f'model.student.<key>: --cfg-options {fixes}')


def _option_text(value) -> str:
    """``value`` as written after ``key=`` in ``--cfg-options``."""
    return value if isinstance(value, str) else repr(value).replace(' ', '')


def set_amp(cfg: Config, options: Optional[dict]) -> None:
    """``--amp``: ``test_cfg.fp16=True`` as mmpretrain's test.py (whose
    ``--cfg-options`` are merged after it: a ``test_cfg.fp16`` there
    wins).

    Args:
        cfg (Config): The config to test, changed in place.
        options (dict, optional): ``--cfg-options``.
    """
    if options and 'test_cfg.fp16' in options:
        return
    if cfg.get('test_cfg', None) is None:
        cfg.test_cfg = ConfigDict()
    cfg.test_cfg['fp16'] = True


def setup_cfg(args) -> Config:
    """The config the Runner tests: the command line applied, a distiller
    replaced by its student, no checkpoint loaded by the Runner (the tool
    loads it, see :func:`load_weights`)."""
    import mmdistill  # noqa: F401  registries, checkpoint allowlist
    from mmdistill.utils.config import student_config
    from mmdistill.utils.setup_env import prepare_config, set_dataloaders
    if not osp.isfile(args.config):
        sys.exit(f'error: config file {args.config!r} does not exist')
    cfg = Config.fromfile(args.config)
    cfg.launcher = args.launcher
    if args.cfg_options is not None:
        cfg.merge_from_dict(args.cfg_options)
        check_model_options(cfg, args.cfg_options)
    if args.work_dir is not None:
        cfg.work_dir = args.work_dir
    elif cfg.get('work_dir', None) is None:
        cfg.work_dir = osp.join('./work_dirs',
                                osp.splitext(osp.basename(args.config))[0])
    student = student_config(cfg)
    if student is not None:
        print_log(
            'Distillation config: testing its student alone (the teacher is '
            'not built).',
            logger='current')
        # dumped into the work dir under a name of the given config's, as
        # the stock tools do (a Config without a filename: <timestamp>.py),
        # but not its own: training dumped the distillation config there
        # (the default work dir is the same), which must stay
        name = None
        if cfg.filename:
            stem, ext = osp.splitext(cfg.filename)
            name = f'{stem}_student{ext}'
        cfg = Config(student.to_dict(), cfg_text=cfg.text, filename=name)
    cfg.load_from = None
    cfg.resume = False
    if args.amp:
        set_amp(cfg, args.cfg_options)
    if args.show or args.show_dir:
        cfg = enable_visualization(cfg, args)
    if args.tta:
        cfg = enable_tta(cfg)
    set_dataloaders(cfg, ('test_dataloader', ), False, args.no_pin_memory)
    if (args.out is not None and args.out_item != 'metrics'
            and not args.out.endswith(PICKLE_EXTENSIONS)):
        if cfg.get('default_scope', None) != 'mmseg':
            sys.exit(f'error: --out must end with .pkl or .pickle, got '
                     f'{args.out!r} (--out-item metrics: the metrics to '
                     'a .json, .yaml or .pkl file)')
        evaluators = cfg.test_evaluator
        for evaluator in (evaluators if isinstance(evaluators, list) else
                          [evaluators]):
            evaluator['output_dir'] = args.out
            evaluator['keep_results'] = True
    prepare_config(cfg)
    return cfg


def load_weights(model, checkpoint: str) -> dict:
    """Load ``checkpoint`` into ``model`` (a student, possibly wrapped in a
    model wrapper or in the test-time augmentation model of ``--tta``).

    A runner checkpoint of a distiller gives its ``student.`` weights (the
    connectors are left out); a student-only or plain checkpoint is loaded
    as is. Every weight of the model must be in the checkpoint: testing
    random weights by mistake stops with the list of missing keys.

    Returns:
        dict: The checkpoint's ``meta``.
    """
    from mmengine.model import BaseTTAModel, is_model_wrapper

    from mmdistill.utils.checkpoint import (CheckpointError,
                                            CheckpointMismatchError,
                                            STUDENT_PREFIX,
                                            UnsafeCheckpointError,
                                            extract_state_dict,
                                            read_checkpoint)
    from mmdistill.utils.checkpoint import load_weights as load_checked
    # DDP and --tta's BaseTTAModel (SegTTAModel, DetTTAModel, ...) keep the
    # student in .module, as mmengine's own checkpoint loading unwraps them
    while is_model_wrapper(model) or isinstance(model, BaseTTAModel):
        model = model.module
    try:
        ckpt = read_checkpoint(checkpoint)
        raw = ckpt.get('state_dict', ckpt) if isinstance(ckpt, dict) else {}
        state = extract_state_dict(ckpt, repr(checkpoint))
    except FileNotFoundError:
        sys.exit(f'error: checkpoint {checkpoint!r} does not exist')
    except (CheckpointError, UnsafeCheckpointError) as err:
        sys.exit(f'error: {err}')
    if any(k.startswith((STUDENT_PREFIX, 'module.' + STUDENT_PREFIX))
           for k in raw):
        print_log(
            f'{checkpoint}: a distiller checkpoint, its student is tested.',
            logger='current')
    own = model.state_dict()
    unexpected = [k for k in state if k not in own]
    if unexpected:
        print_log(
            f'Weights in {checkpoint} that the model does not have '
            f'(ignored): {", ".join(unexpected[:20])}'
            f'{" ..." if len(unexpected) > 20 else ""}',
            logger='current',
            level=30)
    try:
        load_checked(model, checkpoint, strict=True, owner='model',
                     state={k: v for k, v in state.items() if k in own})
    except CheckpointMismatchError as err:
        sys.exit(f'error: {err}\nTest it with the config it was trained '
                 'with.')
    return ckpt.get('meta', {}) or {}


def add_dump_metric(runner, out: str, scope) -> None:
    """Dump the predictions to ``out`` (a pickle) after the evaluation."""
    if scope == 'mmdet':
        from mmdet.evaluation import DumpDetResults as Dump
    else:
        from mmengine.evaluator import DumpResults as Dump
    runner.test_evaluator.metrics.append(Dump(out_file_path=out))


def dump_metrics(metrics: dict, out: str) -> None:
    """``--out-item metrics``: write ``metrics`` to ``out`` (by its
    extension, ``mmengine.dump``), from the first process only.

    Args:
        metrics (dict): What ``runner.test()`` returned.
        out (str): A ``.json``, ``.yaml``/``.yml`` or ``.pkl`` file.
    """
    import mmengine
    from mmengine.dist import is_main_process
    if is_main_process():
        mmengine.mkdir_or_exist(osp.dirname(osp.abspath(out)))
        mmengine.dump(metrics, out)
        print_log(f'--out-item metrics: the metrics are in {out}.',
                  logger='current')


def main(argv=None) -> dict:
    args = parse_args(argv)
    cfg = setup_cfg(args)
    from mmdistill.utils.setup_env import (finish_distributed,
                                           init_distributed,
                                           rank_zero_test_json)
    init_distributed(cfg)
    if 'runner_type' not in cfg:
        runner = Runner.from_cfg(cfg)
    else:
        from mmengine.registry import RUNNERS
        runner = RUNNERS.build(cfg)
    rank_zero_test_json(runner)
    load_weights(runner.model, args.checkpoint)
    if (args.out is not None and args.out_item != 'metrics'
            and args.out.endswith(PICKLE_EXTENSIONS)):
        add_dump_metric(runner, args.out, cfg.get('default_scope', None))
    metrics = runner.test()
    if args.out is not None and args.out_item == 'metrics':
        dump_metrics(metrics, args.out)
    finish_distributed()
    return metrics


if __name__ == '__main__':
    main()
