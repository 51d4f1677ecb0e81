"""Student-only checkpoints next to the runner's checkpoints."""
import copy
import os
import os.path as osp
from typing import Dict, Optional, Set

from mmengine.config import Config
from mmengine.dist import master_only
from mmengine.hooks import CheckpointHook, Hook
from mmengine.logging import print_log

from mmdistill.registry import HOOKS
from mmdistill.utils.checkpoint import (free_path, save_student_checkpoint,
                                        student_state_dict)

STUDENT_CONFIG = 'student_config.py'


def student_config(cfg: Config) -> Optional[Config]:
    """The config a plain mmdet/mmseg run of the student uses: the
    distillation config with ``model`` replaced by its student and the
    mmdistill parts (hook, import) removed. None for a non-distiller model."""
    model = cfg.get('model', {})
    if 'student' not in model:
        return None
    plain = copy.deepcopy(cfg._cfg_dict.to_dict())
    plain['model'] = plain['model']['student']
    hooks = [h for h in plain.get('custom_hooks') or []
             if 'StudentCheckpointHook' not in str(h.get('type', ''))]
    if hooks:
        plain['custom_hooks'] = hooks
    else:
        plain.pop('custom_hooks', None)
    imports = plain.get('custom_imports')
    if imports:
        names = [n for n in imports.get('imports', []) if n != 'mmdistill'
                 and not n.startswith('mmdistill.')]
        if names:
            imports['imports'] = names
        else:
            plain.pop('custom_imports')
    plain['load_from'] = None
    plain['resume'] = False
    return Config(plain)


@HOOKS.register_module()
class StudentCheckpointHook(Hook):
    """Write a student-only checkpoint next to every runner checkpoint.

    After mmengine's ``CheckpointHook`` saves ``iter_N.pth`` (or
    ``epoch_N.pth``, or ``best_<metric>_iter_N.pth``), this hook writes
    ``iter_N<suffix>.pth`` beside it: the student's weights under plain
    mmdet/mmseg keys plus ``meta.dataset_meta``, loadable by
    ``init_detector`` / ``init_model`` / their ``tools/test.py`` with
    ``student_config.py``, which the hook writes into the work dir once. An
    existing file is never overwritten: a new name ``...-1.pth`` is used.

    The export holds the weights the runner checkpoint holds (with an
    ``EMAHook``, the averaged ones), taken from the checkpoint dict as it is
    saved. When ``CheckpointHook`` deletes an old checkpoint
    (``max_keep_ckpts``, a superseded best), the export this hook wrote for
    it goes too.

    Args:
        suffix (str): Added to the runner checkpoint's name. Defaults to
            ``'_student'``.
    """
    priority = 'LOWEST'  # after CheckpointHook (VERY_LOW) in every stage

    def __init__(self, suffix: str = '_student') -> None:
        self.suffix = suffix
        self._done: Set[str] = set()
        self._written: Dict[str, str] = {}  # runner checkpoint -> export
        self._saved_state: Optional[dict] = None

    @staticmethod
    def _saved_paths(runner) -> Set[str]:
        paths = set()
        for hook in runner.hooks:
            if isinstance(hook, CheckpointHook):
                paths.add(getattr(hook, 'last_ckpt', None))
                paths.add(getattr(hook, 'best_ckpt_path', None))
                paths.update((getattr(hook, 'best_ckpt_path_dict', None)
                              or {}).values())
        return {p for p in paths if p}

    def export_path(self, checkpoint: str) -> str:
        stem, ext = osp.splitext(checkpoint)
        return f'{stem}{self.suffix}{ext or ".pth"}'

    @master_only
    def before_train(self, runner) -> None:
        # Checkpoints that exist before this run (a resume) are not re-saved.
        self._done = self._saved_paths(runner)
        cfg = student_config(runner.cfg)
        if cfg is not None:
            path = osp.join(runner.work_dir, STUDENT_CONFIG)
            if osp.exists(path):
                with open(path) as f:
                    if f.read() == cfg.pretty_text:
                        return
                path = free_path(path)
            cfg.dump(path)
            print_log(f'Student config for plain mmdet/mmseg: {path}',
                      logger='current')

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        # Runs after EMAHook's (priority LOWEST): the weights being saved.
        state = checkpoint.get('state_dict', {})
        if any(k.startswith('student.') for k in state):
            self._saved_state = student_state_dict(state)

    @master_only
    def _export_new(self, runner) -> None:
        for checkpoint, export in list(self._written.items()):
            if not osp.exists(checkpoint):  # removed by CheckpointHook
                if osp.exists(export):
                    os.remove(export)
                del self._written[checkpoint]
        for checkpoint in sorted(self._saved_paths(runner) - self._done):
            if not osp.exists(checkpoint):
                continue
            self._done.add(checkpoint)
            if self._saved_state is None:
                return
            dataset = getattr(runner.train_dataloader, 'dataset', None)
            path = free_path(self.export_path(checkpoint))
            save_student_checkpoint(
                self._saved_state,
                path,
                dataset_meta=getattr(dataset, 'metainfo', None),
                meta=dict(
                    source_checkpoint=osp.basename(checkpoint),
                    epoch=runner.epoch,
                    iter=runner.iter))
            self._written[checkpoint] = path
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
