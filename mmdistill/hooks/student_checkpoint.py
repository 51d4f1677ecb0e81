"""Student-only checkpoints next to the runner's checkpoints."""
import logging
import os
import os.path as osp
import re
from typing import Dict, List, Mapping, Optional, Set

from mmengine.dist import master_only
from mmengine.hooks import CheckpointHook, Hook
from mmengine.logging import print_log
from mmengine.model import is_model_wrapper

from mmdistill.registry import HOOKS
from mmdistill.utils.checkpoint import (free_path, read_checkpoint,
                                        save_student_checkpoint,
                                        student_state_dict)
from mmdistill.utils.config import (STUDENT_CONFIG,
                                    custom_keys_on_distillation,
                                    student_config, unsafe_hook_errors)
from .utils import check_registered_once


@HOOKS.register_module()
class StudentCheckpointHook(Hook):
    """Write a student-only checkpoint next to every runner checkpoint.

    After mmengine's ``CheckpointHook`` saves ``iter_N.pth`` (or
    ``epoch_N.pth``, or ``best_<metric>_iter_N.pth``), this hook writes
    ``iter_N<suffix>.pth`` beside it: the student's weights under plain
    mmdet/mmseg keys plus ``meta.dataset_meta``, loadable by
    ``init_detector`` / ``init_model`` / their ``tools/test.py`` with
    ``student_config.py``, which the hook writes into the work dir once.

    The export holds the weights the runner checkpoint holds (with an
    ``EMAHook``, the averaged ones), taken from the checkpoint dict as it is
    saved.

    Runner checkpoints and exports go together, also across a crash and a
    resume:

    * at the start of training (a new run or a resume), every runner
      checkpoint of the checkpoint folder without its export gets one
      (written from the file, e.g. after the process was killed between
      the two saves);
    * an export whose runner checkpoint is gone is removed: at the start
      (e.g. ``max_keep_ckpts`` lowered), and whenever ``CheckpointHook``
      deletes a checkpoint (``max_keep_ckpts``, a superseded best), also
      those that a previous run wrote. A file is only removed when it is an
      export of that checkpoint (its ``meta.source_checkpoint`` says so);
      a stale temporary file of an interrupted export is removed too.

    An existing file is never overwritten: a new name ``...-1.pth`` is used.
    Checkpoints in a remote ``out_dir`` (not a local folder) get no exports.

    Args:
        suffix (str): Added to the runner checkpoint's name. Defaults to
            ``'_student'``.
    """
    priority = 'LOWEST'  # after CheckpointHook (VERY_LOW) in every stage

    def __init__(self, suffix: str = '_student') -> None:
        self.suffix = suffix
        self._done: Set[str] = set()
        # runner checkpoint -> exports of it written by this run
        self._written: Dict[str, List[str]] = {}
        # runner checkpoint -> exports of it found at the start
        self._found: Dict[str, List[str]] = {}
        self._saved_state: Optional[dict] = None
        self._saved_step: tuple = (None, None)

    def before_run(self, runner) -> None:
        check_registered_once(self, runner,
                              'export every checkpoint once more')
        problems = unsafe_hook_errors(runner.hooks)
        if problems:
            raise ValueError(' '.join(problems))
        model = getattr(runner, 'model', None)
        model = model.module if is_model_wrapper(model) else model
        warning = model is not None and custom_keys_on_distillation(
            runner.cfg, model)
        if warning:
            print_log(warning, logger='current', level=logging.WARNING)

    @staticmethod
    def _checkpoint_hooks(runner) -> List[CheckpointHook]:
        return [h for h in runner.hooks if isinstance(h, CheckpointHook)]

    @classmethod
    def _saved_paths(cls, runner) -> Set[str]:
        paths = set()
        for hook in cls._checkpoint_hooks(runner):
            paths.add(getattr(hook, 'last_ckpt', None))
            paths.add(getattr(hook, 'best_ckpt_path', None))
            paths.update((getattr(hook, 'best_ckpt_path_dict', None)
                          or {}).values())
        return {p for p in paths if p}

    def export_path(self, checkpoint: str) -> str:
        stem, ext = osp.splitext(checkpoint)
        return f'{stem}{self.suffix}{ext or ".pth"}'

    # ------------------------------------------------------ start / resume
    def _source_name(self, name: str) -> Optional[str]:
        """The runner checkpoint an export named ``name`` belongs to
        (``iter_8_student.pth``, ``iter_8_student-1.pth`` -> ``iter_8.pth``),
        or None for any other name."""
        match = re.fullmatch(
            r'(?P<stem>.+)' + re.escape(self.suffix) + r'(-\d+)?\.pth', name)
        return f'{match.group("stem")}.pth' if match else None

    @staticmethod
    def _checkpoint_pattern(hook: CheckpointHook) -> 're.Pattern':
        """The names ``hook`` gives its checkpoints: ``filename_tmpl`` with
        any step, and ``best_<metric>_`` before it."""
        template = getattr(hook, 'filename_tmpl', None) or (
            'epoch_{}.pth' if hook.by_epoch else 'iter_{}.pth')
        plain = r'\d+'.join(re.escape(p) for p in template.split('{}'))
        return re.compile(f'(best_.+_)?{plain}')

    def _is_export_of(self, export: str, checkpoint: str) -> bool:
        """Whether the file ``export`` is an export of ``checkpoint`` (its
        ``meta.source_checkpoint``); unreadable files are not."""
        try:
            meta = dict(read_checkpoint(export).get('meta') or {})
        except Exception as err:  # noqa: B902  keep what cannot be read
            print_log(
                f'{export} looks like the export of {checkpoint} but is '
                f'kept: it could not be read ({err}).',
                logger='current',
                level=logging.WARNING)
            return False
        return meta.get('source_checkpoint') == osp.basename(checkpoint)

    def _remove_exports(self, checkpoint: str, exports: List[str],
                        verify: bool) -> None:
        for export in exports:
            if not osp.exists(export) or (
                    verify and not self._is_export_of(export, checkpoint)):
                continue
            os.remove(export)
            print_log(
                f'Removed {export}: its runner checkpoint '
                f'{osp.basename(checkpoint)} no longer exists.',
                logger='current')

    def _set_aside_replaced(self, checkpoint: str) -> None:
        """This run saved ``checkpoint`` again (it resumed from an earlier
        one, and mmengine wrote the same name): the exports found at the
        start belong to the file it replaced. They keep their weights under
        ``<export>-replaced`` names, so that the plain name pairs with the
        new file."""
        for export in self._found.pop(checkpoint, []):
            if not osp.exists(export) or not self._is_export_of(
                    export, checkpoint):
                continue
            stem, ext = osp.splitext(export)
            aside = free_path(f'{stem}-replaced{ext}')
            try:
                os.rename(export, aside)
            except FileNotFoundError:
                continue  # removed meanwhile (by hand)
            print_log(
                f'{osp.basename(checkpoint)} was saved again by this run '
                '(resumed from an earlier checkpoint, or started again in '
                'the same work dir): the export of the file it replaced is '
                f'kept as {osp.basename(aside)}.',
                logger='current',
                level=logging.WARNING)

    def _remove_stale_temporaries(self, folder: str, names: List[str],
                                  is_export) -> None:
        """``<export>.tmp-<pid>`` files that an export killed while writing
        left behind (never a complete file); a live writer's are kept."""
        for name in names:
            base, sep, pid = name.rpartition('.tmp-')
            if not sep or not pid.isdigit() or not is_export(base):
                continue
            try:
                os.kill(int(pid), 0)
                continue  # the writer still runs
            except ProcessLookupError:
                pass
            except (OSError, OverflowError):
                continue
            os.remove(osp.join(folder, name))
            print_log(f'Removed {name}: the unfinished part of an '
                      'interrupted export.', logger='current')

    def _write_export(self, runner, checkpoint: str, state: Mapping,
                      epoch: int, iteration: int,
                      dataset_meta: Optional[dict]) -> str:
        path = free_path(self.export_path(checkpoint))
        save_student_checkpoint(
            state,
            path,
            dataset_meta=dataset_meta,
            meta=dict(
                source_checkpoint=osp.basename(checkpoint),
                epoch=epoch,
                iter=iteration))
        self._written.setdefault(checkpoint, []).append(path)
        return path

    def _reconcile(self, runner) -> None:
        """Pair the checkpoint folder's runner checkpoints with exports:
        write the missing exports, remove the orphaned ones."""
        hooks = self._checkpoint_hooks(runner)
        folders = {getattr(h, 'out_dir', None) or runner.work_dir
                   for h in hooks}
        patterns = [self._checkpoint_pattern(h) for h in hooks]
        for folder in sorted(f for f in folders if osp.isdir(f)):
            names = sorted(os.listdir(folder))
            present = set(names)

            def export_of(name: str) -> Optional[str]:
                source = self._source_name(name)
                if source is not None and any(
                        p.fullmatch(source) for p in patterns):
                    return source
                return None

            exports: Dict[str, List[str]] = {}
            for name in names:
                source = export_of(name)
                if source is not None:
                    exports.setdefault(source, []).append(name)
            self._remove_stale_temporaries(folder, names, export_of)
            for source, found in exports.items():
                checkpoint = osp.join(folder, source)
                paths = [osp.join(folder, n) for n in found]
                if source in present:
                    self._found[checkpoint] = paths
                else:
                    self._remove_exports(checkpoint, paths, verify=True)
            for name in names:
                if name in exports or not any(
                        p.fullmatch(name) for p in patterns):
                    continue
                self._export_existing(runner, osp.join(folder, name))

    def _export_existing(self, runner, checkpoint: str) -> None:
        """Write the missing export of the runner checkpoint file
        ``checkpoint``; a file that cannot be read is reported and left."""
        try:
            saved = read_checkpoint(checkpoint)
            state = saved.get('state_dict', {})
        except Exception as err:  # noqa: B902  the run goes on without it
            print_log(
                f'No student export for {checkpoint}: it could not be read '
                f'({err}).',
                logger='current',
                level=logging.WARNING)
            return
        if not any(str(k).startswith('student.') for k in state):
            return  # not a distiller's checkpoint
        meta = saved.get('meta') or {}
        dataset = getattr(runner.train_dataloader, 'dataset', None)
        path = self._write_export(
            runner, checkpoint, student_state_dict(state),
            epoch=meta.get('epoch'), iteration=meta.get('iter'),
            dataset_meta=meta.get('dataset_meta') or getattr(
                dataset, 'metainfo', None))
        print_log(
            f'Student-only checkpoint saved to {path} (missing for the '
            f'existing {osp.basename(checkpoint)})',
            logger='current')

    @master_only
    def before_train(self, runner) -> None:
        # Checkpoints that exist before this run (a resume) are not re-saved.
        # CheckpointHook's before_train ran (its out_dir is set, and on
        # resume it deleted what max_keep_ckpts no longer keeps).
        self._done = self._saved_paths(runner)
        self._reconcile(runner)
        cfg = student_config(runner.cfg)
        if cfg is not None:
            path = osp.join(runner.work_dir, STUDENT_CONFIG)
            if osp.exists(path):
                with open(path) as f:
                    if f.read() == cfg.pretty_text:
                        return
                path = free_path(path)
            cfg.dump(path)
            print_log('Student config for plain mmdet/mmseg/mmpretrain: '
                      f'{path}', logger='current')

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        """``--resume`` takes a runner checkpoint of this distillation: one
        of the student alone has no connectors, optimizer state for them,
        nor the distillation's iteration to go on from (an export has no
        optimizer or message hub at all). Stops before anything loads,
        naming ``load_from``, which starts the student from it."""
        state = checkpoint.get('state_dict', checkpoint)
        if not getattr(runner, '_resume', False) or not isinstance(
                state, dict) or not state or any(
                    k.startswith(('student.', 'module.student.'))
                    for k in state):
            return
        raise ValueError(
            '--resume (resume=True) takes a runner checkpoint of this '
            'distillation (its weights are "student.*"); this one holds the '
            'student alone. To start the student from it, give it as '
            'load_from (without --resume) or as model.student_checkpoint.')

    # ------------------------------------------------------------ training
    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        # Runs after EMAHook's (priority LOWEST): the weights being saved.
        state = checkpoint.get('state_dict', {})
        if any(k.startswith('student.') for k in state):
            self._saved_state = student_state_dict(state)
            # the checkpoint's own count (runner.iter is one behind during
            # after_train_iter)
            meta = checkpoint.get('meta') or {}
            self._saved_step = (meta.get('epoch'), meta.get('iter'))

    @master_only
    def _export_new(self, runner) -> None:
        for tracked, verify in ((self._written, False), (self._found, True)):
            for checkpoint, exports in list(tracked.items()):
                if not osp.exists(checkpoint):  # removed by CheckpointHook
                    self._remove_exports(checkpoint, exports, verify)
                    del tracked[checkpoint]
        for checkpoint in sorted(self._saved_paths(runner) - self._done):
            if not osp.exists(checkpoint):
                continue
            self._done.add(checkpoint)
            if self._saved_state is None:
                return
            self._set_aside_replaced(checkpoint)
            dataset = getattr(runner.train_dataloader, 'dataset', None)
            epoch, iteration = self._saved_step
            path = self._write_export(
                runner, checkpoint, self._saved_state,
                epoch=epoch, iteration=iteration,
                dataset_meta=getattr(dataset, 'metainfo', None))
            print_log(f'Student-only checkpoint saved to {path}',
                      logger='current')

    def after_train_iter(self, runner, batch_idx, data_batch=None,
                         outputs=None) -> None:
        self._export_new(runner)

    def after_train_epoch(self, runner) -> None:
        self._export_new(runner)

    def after_val_epoch(self, runner, metrics=None) -> None:
        self._export_new(runner)

    def after_train(self, runner) -> None:
        self._export_new(runner)
