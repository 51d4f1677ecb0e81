"""Configs: loading the ones that name a teacher, and the plain student
config of a distillation config."""
import copy
import importlib.util
import os
import os.path as osp
from typing import List, Optional

from mmengine.config import Config

from .names import closest, did_you_mean

#: the student config StudentCheckpointHook writes into the work dir
STUDENT_CONFIG = 'student_config.py'


def _shipped_folder(path: str) -> Optional[str]:
    """The folder where a ``scope::dir/file.py`` config would be: the
    package's ``.mim/configs``; None when the package is not installed."""
    scope = path.split('::', 1)[0]  # the package's own name
    known = scope in ('mmdet', 'mmseg', 'mmpretrain')
    spec = importlib.util.find_spec(scope) if known else None
    if spec is None or not spec.submodule_search_locations:
        return None
    return osp.join(list(spec.submodule_search_locations)[0], '.mim',
                    'configs')


def _closest_shipped(root: str, path: str) -> str:
    """``'; closest: ...'`` for a ``scope::dir/file.py`` path that does not
    exist under ``root``: the files of its folder with the closest names
    (or the closest folders), or ``''``."""
    scope, rel = path.split('::', 1)
    folder, name = osp.split(rel)
    if osp.isdir(osp.join(root, folder)):
        found = closest(name, os.listdir(osp.join(root, folder)))
        found = [f'{scope}::{folder}/{f}' for f in found]
    elif osp.isdir(root):
        found = [f'{scope}::{f}/' for f in closest(folder, os.listdir(root))]
    else:
        return ''
    return f'; closest: {", ".join(found)}' if found else ''


def model_config(cfg) -> dict:
    """The model config of a loaded config as mmengine's Runner builds it:
    a copy, with the config-level ``data_preprocessor`` when the model
    names none (mmpretrain's configs set it there; for a distiller it then
    serves a student without one).

    Args:
        cfg (Config): The loaded config.

    Returns:
        dict: The model config to build.
    """
    if 'model' not in cfg:
        raise KeyError('The config has no "model".')
    model = copy.deepcopy(cfg.model)
    if model.get('data_preprocessor') is None and cfg.get(
            'data_preprocessor') is not None:
        model['data_preprocessor'] = copy.deepcopy(cfg.data_preprocessor)
    return model


def hook_type_errors(cfg) -> List[str]:
    """What is wrong with the ``type`` of each of ``cfg.custom_hooks`` that
    the Runner would not find, looked up as the Runner does (in the config's
    ``default_scope``), with the closest registered names: mmdistill's hooks
    are written ``'mmdistill.<Name>'`` in a config whose scope is mmdet's,
    mmseg's or mmpretrain's.

    Args:
        cfg (Config): The config.

    Returns:
        list[str]: One line per hook that would not build; empty when all
        are found.
    """
    from mmengine.registry import HOOKS

    import mmdistill.hooks  # noqa: F401  registers mmdistill's hooks
    hooks = cfg.get('custom_hooks', None) or []
    problems = []
    for i, hook in enumerate(hooks):
        kind = hook.get('type') if isinstance(hook, dict) else None
        if not isinstance(kind, str):
            continue
        # the scope the Runner builds it in: its own _scope_, else the
        # config's
        scope = hook.get('_scope_') or cfg.get('default_scope')
        with HOOKS.switch_scope_and_registry(scope) as found:
            if found.get(kind) is not None:
                continue
            # the scope's own, mmengine's, and every loaded scope's by its
            # prefix ('mmdistill.StudentCheckpointHook', 'mmdet.X')
            names = set(found.module_dict) | set(HOOKS.module_dict) | {
                f'{child_scope}.{name}'
                for child_scope, child in HOOKS.children.items()
                for name in child.module_dict}
        problems.append(f'custom_hooks[{i}].type={kind!r} is not a '
                        f'registered hook{did_you_mean(kind, names)}')
    return problems


def load_config(path: str) -> Config:
    """Load a config from a local file or a scoped ``mmdet::``/``mmseg::``/
    ``mmpretrain::`` path shipped inside those packages."""
    if '::' in path:
        from mmengine.hub import get_config
        try:
            return get_config(path)
        except Exception as err:
            scope = path.split('::', 1)[0]
            root = _shipped_folder(path)
            if root is None or osp.isfile(osp.join(root,
                                                   path.split('::', 1)[1])):
                raise FileNotFoundError(
                    f'Cannot load the config {path!r}: {err}. Check that '
                    f'the package of scope {scope!r} is installed and that '
                    'the file exists in its configs/ folder (3.x file names '
                    'for mmdet, 1.x for mmseg).') from err
            reason = str(err)
            if len(reason) > 400:
                reason = reason[:400] + ' ...'
            # the file does not exist: mmengine's own error chain would list
            # every config it knows
            raise FileNotFoundError(
                f'Cannot load the config {path!r}: {reason}. The file does '
                f'not exist in the configs/ folder of {scope!r} (3.x file '
                'names for mmdet, 1.x for mmseg)'
                f'{_closest_shipped(root, path)}.') from None
    if not osp.isfile(path):
        raise FileNotFoundError(
            f'Config file {path!r} does not exist (relative paths are taken '
            f'from the current directory {osp.abspath(".")!r}).')
    return Config.fromfile(path)


def _is_mmdistill_hook(kind) -> bool:
    """Whether a hook's ``type`` names one of mmdistill's hooks (they need
    the distiller, or mmdistill's checkpoints)."""
    if not isinstance(kind, str):
        return getattr(kind, '__module__', '').startswith('mmdistill')
    from mmdistill.registry import HOOKS
    return kind.startswith('mmdistill.') or kind in HOOKS.module_dict


def student_config(cfg: Config) -> Optional[Config]:
    """The config a plain mmdet/mmseg run of the student uses: the
    distillation config with ``model`` replaced by its student and the
    mmdistill parts (its hooks, its import) removed. None for a
    non-distiller model."""
    model = cfg.get('model', {})
    if 'student' not in model:
        return None
    plain = copy.deepcopy(cfg._cfg_dict.to_dict())
    student = plain['model']['student']
    # the distiller's own data_preprocessor serves a student without one
    if student.get('data_preprocessor') is None and \
            plain['model'].get('data_preprocessor') is not None:
        student['data_preprocessor'] = plain['model']['data_preprocessor']
    plain['model'] = student
    hooks = [h for h in plain.get('custom_hooks') or []
             if not _is_mmdistill_hook(h.get('type', ''))]
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
