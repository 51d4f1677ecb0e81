"""Configs: loading the ones that name a teacher, and the plain student
config of a distillation config."""
import ast
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
    """What is wrong with the ``type`` of each of ``cfg.custom_hooks`` and
    ``cfg.default_hooks`` that the Runner would not find, looked up as the
    Runner does (in the config's ``default_scope``), with the closest
    registered names: mmdistill's hooks are written ``'mmdistill.<Name>'``
    in a config whose scope is mmdet's, mmseg's or mmpretrain's.

    Args:
        cfg (Config): The config.

    Returns:
        list[str]: One line per hook that would not build; empty when all
        are found.
    """
    from mmengine.registry import HOOKS

    import mmdistill.hooks  # noqa: F401  registers mmdistill's hooks
    hooks = [(f'custom_hooks[{i}]', hook) for i, hook in
             enumerate(cfg.get('custom_hooks', None) or [])]
    hooks += [(f'default_hooks.{key}', hook) for key, hook in
              (cfg.get('default_hooks', None) or {}).items()]
    problems = []
    for where, hook in hooks:
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
        problems.append(f'{where}.type={kind!r} is not a '
                        f'registered hook{did_you_mean(kind, names)}')
    return problems


def config_bases(path: str) -> List[str]:
    """The ``_base_`` entries a config file assigns (read, not run)."""
    with open(path, encoding='utf-8') as f:
        tree = ast.parse(f.read(), path)
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(
                isinstance(t, ast.Name) and t.id == '_base_'
                for t in node.targets):
            try:
                value = ast.literal_eval(node.value)
            except ValueError:
                return []
            return [value] if isinstance(value, str) else list(value)
    return []


def student_source(path: str, student: dict) -> Optional[str]:
    """The config a distillation config file takes its student from: the
    nearest ``_base_`` file (local or ``mmseg::...``) whose model is the
    student as the distillation config has it (so a local file that
    shrinks or changes a stock model is named, not the stock one); else the
    first OpenMMLab config it inherits whose model has the student's type
    and backbone; None when that cannot be told."""
    if '::' in path or not osp.isfile(path):
        return None
    # the inherited files, nearest first (breadth-first)
    order, queue, seen = [], [osp.abspath(path)], set()
    while queue:
        file = queue.pop(0)
        try:
            bases = config_bases(file)
        except (OSError, SyntaxError, ValueError):
            continue
        for base in bases:
            if '::' not in base:
                base = osp.normpath(osp.join(osp.dirname(file), base))
                if not osp.isfile(base):
                    continue
            if base in seen:  # inherited twice (a diamond)
                continue
            seen.add(base)
            order.append(base)
            if '::' not in base:
                queue.append(base)
    models = []
    for base in order:
        try:
            model = load_config(base).get('model') or {}
        except Exception:  # an unreadable base only loses the hint
            continue
        if model == student:
            return base
        models.append((base, model))
    backbone = (student.get('backbone') or {})
    for base, model in models:
        theirs = model.get('backbone') or {}
        if '::' in base and model.get('type') == student.get('type') and \
                all(theirs.get(k) == backbone.get(k)
                    for k in ('type', 'depth')):
            return base
    return None


#: hooks of the OpenMMLab recipes that cannot run on a distiller, and why
UNSAFE_HOOKS = {
    'MeanTeacherHook':
    "mmdet's MeanTeacherHook averages model.student into model.teacher (its "
    'semi-supervised detectors have these attributes); on a distiller that '
    'would overwrite the frozen teacher with the student. A semi-supervised '
    'detector is not a distillation student: distil its plain detector and '
    'remove the hook',
}


def hook_name(hook) -> str:
    """A hook config's class name without its scope (``'EMAHook'`` for
    ``dict(type='mmdet.EMAHook')``, a class or a built hook)."""
    kind = hook.get('type', '') if isinstance(hook, dict) else hook
    if not isinstance(kind, str):
        kind = getattr(kind, '__name__', type(kind).__name__)
    return kind.split('.')[-1]


def unsafe_hook_errors(hooks) -> List[str]:
    """Why each of ``hooks`` (configs, classes or built hooks) cannot run on
    a distiller (:data:`UNSAFE_HOOKS`); empty when all can."""
    return [f'{hook_name(h)}: {UNSAFE_HOOKS[hook_name(h)]}.' for h in hooks
            if hook_name(h) in UNSAFE_HOOKS]


def lost_from_student(path: str, cfg: Config) -> List[str]:
    """What a distillation config's own ``custom_hooks`` / ``custom_imports``
    dropped of its student config's: a list written in a config replaces its
    base's, so the student recipe's EMAHook or its project's modules are
    silently gone.

    Args:
        path (str): The distillation config file.
        cfg (Config): It, loaded.

    Returns:
        list[str]: One message per list that lost entries.
    """
    student = (cfg.get('model') or {}).get('student')
    if not isinstance(student, dict) or not osp.isfile(path):
        return []
    source = student_source(path, student)
    if source is None:
        return []
    try:
        base = load_config(source)
    except Exception:  # an unreadable base only loses the hint
        return []
    found = []
    kept = {hook_name(h) for h in cfg.get('custom_hooks', None) or []}
    lost = [hook_name(h) for h in base.get('custom_hooks', None) or []
            if hook_name(h) not in kept]
    if lost:
        found.append(
            f'custom_hooks of {osp.basename(path)} replaces the list of its '
            f'student config {source}: its {", ".join(lost)} no longer run '
            '(a list in a config replaces its base\'s). Extend the '
            "student's list, custom_hooks = [*_base_.get('custom_hooks', "
            "[]), ...], and put mmdistill's StudentCheckpointHook and "
            'RNGStateHook in default_hooks (README, "A distillation '
            'config").')

    def imported(config) -> List[str]:
        names = (config.get('custom_imports', None) or {}).get('imports')
        return [names] if isinstance(names, str) else list(names or [])

    imports = imported(cfg)
    lost = [m for m in imported(base) if m not in imports]
    if lost:
        found.append(
            f'custom_imports of {osp.basename(path)} replaces the list of '
            f'its student config {source}: {", ".join(lost)} is not '
            'imported. mmdistill needs no import (its types carry the '
            "'mmdistill.' prefix): drop custom_imports, or list the "
            "student's modules too.")
    return found


def custom_keys_on_distillation(cfg, model) -> Optional[str]:
    """Which ``optim_wrapper.paramwise_cfg.custom_keys`` of the student's
    recipe also apply to the distiller's own parameters (connectors,
    losses): mmengine's optimizer constructor matches the keys as
    substrings of parameter names, the longest first, so a pair named
    ``backbone`` trains its new connector at the recipe's backbone
    ``lr_mult=0.1`` (SegFormer's ``head``: 10x).

    Args:
        cfg: The run's config.
        model (nn.Module): The distiller (unwrapped).

    Returns:
        str, optional: The warning naming each key, what it sets and the
        parameters it reaches, and the fix; None when no key does.
    """
    optim = (cfg.get('optim_wrapper', None) or {}) if cfg else {}
    keys = ((optim.get('paramwise_cfg', None) or {}).get('custom_keys')
            or {})
    # other constructors (layer-wise lr decay) read custom_keys otherwise
    constructor = str(optim.get('constructor', None) or
                      'DefaultOptimWrapperConstructor').split('.')[-1]
    if not keys or constructor != 'DefaultOptimWrapperConstructor':
        return None
    order = sorted(sorted(keys), key=len, reverse=True)  # as mmengine
    reached = {}
    for name, param in model.named_parameters():
        if name.startswith('student.') or not param.requires_grad:
            continue
        key = next((k for k in order if k in name), None)
        # a key naming the distiller's parts was written for them
        if key is not None and not any(
                part in key for part in ('connectors', 'distill_losses')):
            reached.setdefault(key, []).append(name)
    if not reached:
        return None
    found = '; '.join(
        f'{key!r} ({", ".join(f"{k}={v}" for k, v in keys[key].items())})'
        f' -> {", ".join(names[:3])}'
        + (f' and {len(names) - 3} more' if len(names) > 3 else '')
        for key, names in reached.items())
    return (
        'optim_wrapper.paramwise_cfg.custom_keys of the student\'s recipe '
        'also apply to the distillation parameters (mmengine matches the '
        f'keys as parts of parameter names): {found}. They train with '
        'those settings. If that is not meant, rename the pair in '
        'model.distill so that its name does not contain the key (e.g. '
        "'stage' for 'backbone'), or add a longer key for them, e.g. "
        "custom_keys={'connectors.<pair>': dict(lr_mult=1.0)}.")


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
    plain['default_hooks'] = {
        key: hook for key, hook in (plain.get('default_hooks') or {}).items()
        if not (isinstance(hook, dict)
                and _is_mmdistill_hook(hook.get('type', '')))}
    if not plain['default_hooks']:
        plain.pop('default_hooks')
    plain.pop('distill_hooks', None)  # _base_/distill_runtime.py's
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
