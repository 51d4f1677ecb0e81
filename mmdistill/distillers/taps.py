"""Feature taps: read any module's output (or input) by its dotted path.

A tap is written in a config as a string or a dict:

* ``'neck.fpn_convs.0.conv'``: the output of that module;
* ``'neck[2]'``: element 2 of a module that returns a tuple or list;
* ``dict(path='backbone.layer4', source='input')``: the module's first
  positional input instead of its output;
* ``dict(path='bbox_head.retina_cls', call=3)``: the 4th call of a module that
  runs several times per forward (a head shared by the FPN levels);
* ``dict(path='backbone.layer1.0.bn1', clone=True)``: a copy of the output,
  for a module whose output the model then changes in place (a BN followed
  by ``ReLU(inplace=True)``); without it such a tap stops with an error.

The compact form ``'neck.fpn_convs.{0-4}.conv'`` (or ``{0,2,4}``) expands one
distillation pair into one pair per value (see :func:`expand_braces`).
"""
import difflib
import re
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Dict, Iterator, List, Optional, Union

import torch
import torch.nn as nn

from mmdistill.utils.names import UnknownNameError

_BRACES = re.compile(r'\{([^{}]*)\}')
_INDEXED = re.compile(r'^(?P<path>[^\[\]]*)\[(?P<index>-?\d+)\]$')


@dataclass(frozen=True)
class Tap:
    """Where a feature is read.

    Args:
        path (str): Dotted module path, as in ``model.named_modules()``.
        index (int, optional): Element of a tuple/list output; for an input
            tap, the positional argument (default 0).
        source (str): ``'output'`` (default) or ``'input'``.
        call (int): Which call of the module, when it runs several times in
            one forward. Defaults to 0 (the first).
        clone (bool): Record a copy, for outputs changed in place later.
    """
    path: str
    index: Optional[int] = None
    source: str = 'output'
    call: int = 0
    clone: bool = False

    def config_text(self) -> str:
        """The tap as a config writes it: ``'neck[2]'``, or
        ``dict(path=..., source='input', call=1)`` for the dict form."""
        simple = repr(self.path if self.index is None else
                      f'{self.path}[{self.index}]')
        extra = [f'{k}={v!r}' for k, v, default in (
            ('source', self.source, 'output'), ('call', self.call, 0),
            ('clone', self.clone, False)) if v != default]
        if not extra:
            return simple
        return f'dict(path={simple}, ' + ', '.join(extra) + ')'

    def __str__(self) -> str:
        text = self.path
        if self.index is not None:
            text += f'[{self.index}]'
        if self.source != 'output':
            text += f' ({self.source})'
        if self.call:
            text += f' (call {self.call})'
        return text


def parse_tap(spec: Union[str, dict, Tap]) -> Tap:
    """Turn a config value (string or dict) into a :class:`Tap`."""
    if isinstance(spec, Tap):
        return spec
    if isinstance(spec, str):
        match = _INDEXED.match(spec)
        if match:
            return Tap(match['path'], index=int(match['index']))
        return Tap(spec)
    if isinstance(spec, dict):
        unknown = set(spec) - {'path', 'index', 'source', 'call', 'clone'}
        if unknown or 'path' not in spec:
            raise ValueError(
                'A tap dict takes the keys path, index, source, call and '
                f'clone; got '
                f'{sorted(spec)}. Example: dict(path="backbone.layer4", '
                'source="output").')
        tap = parse_tap(spec['path'])
        index = spec.get('index', tap.index)
        source = spec.get('source', 'output')
        if source not in ('output', 'input'):
            raise ValueError(
                f'Tap source must be "output" or "input", got {source!r}.')
        return Tap(tap.path, index, source, int(spec.get('call', 0)),
                   bool(spec.get('clone', False)))
    raise TypeError(f'A tap is a string or a dict, got {type(spec).__name__}')


def _brace_values(body: str) -> List[str]:
    values: List[str] = []
    for part in body.split(','):
        part = part.strip()
        if re.fullmatch(r'\d+-\d+', part):
            start, end = (int(v) for v in part.split('-', 1))
            step = 1 if end >= start else -1
            values += [str(v) for v in range(start, end + step, step)]
        elif part:
            values.append(part)
    if not values:
        raise ValueError(f'Empty brace expression {{{body}}}')
    return values


def expand_braces(spec: Union[str, dict]) -> List[Union[str, dict]]:
    """Expand the one ``{a-b}`` / ``{a,b,c}`` group of a tap, if any.

    ``'neck.fpn_convs.{0-2}.conv'`` gives ``['neck.fpn_convs.0.conv',
    'neck.fpn_convs.1.conv', 'neck.fpn_convs.2.conv']``; a string without
    braces gives a one-element list. A dict tap expands its ``path``.
    """
    text = spec['path'] if isinstance(spec, dict) else spec
    if not isinstance(text, str):
        return [spec]
    groups = _BRACES.findall(text)
    if not groups:
        return [spec]
    if len(groups) > 1:
        raise ValueError(
            f'Tap {text!r} has {len(groups)} brace groups; one is allowed.')
    values = _brace_values(groups[0])
    expanded = [_BRACES.sub(value, text, count=1) for value in values]
    if isinstance(spec, dict):
        return [dict(spec, path=path) for path in expanded]
    return expanded


def never_runs(module: nn.Module) -> bool:
    """Whether ``module`` has no forward of its own (a plain ``ModuleList``
    or ``ModuleDict``, which their owner loops over), so a tap on it never
    records. Subclasses that define a forward (mmseg's ``PPM``,
    ``ASPPModule``) run as a whole."""
    return getattr(type(module), 'forward', None) is nn.Module.forward


def _container_problem(tap: Tap, modules: Dict[str, nn.Module],
                       owner: str) -> str:
    """Why a tap on a module without a forward never records, and what to
    tap instead: its last element that runs, or the output of the nearest
    module above it that runs."""
    module = modules[tap.path]
    kind = type(module).__name__
    path, last = tap.path, None
    while never_runs(module):
        children = list(module.named_children())
        if not children:
            break
        name, module = children[-1]
        path = f'{path}.{name}'
        last = None if never_runs(module) else path
    instead = [repr(last)] if last else []
    parent = tap.path
    while '.' in parent:
        parent = parent.rsplit('.', 1)[0]
        if not never_runs(modules[parent]):
            instead.append(
                f'the output of the module that runs it, {parent!r} (or '
                f"'{parent}[i]', the i-th element of what it returns)")
            break
    return (f'  {tap.path!r} is a {kind} of the {owner}, without a forward '
            'of its own: it never runs as a whole (its owner loops over it)'
            + (': tap ' + ' or '.join(instead) if instead else ''))


def check_paths(model: nn.Module, taps: List[Tap], owner: str) -> None:
    """Raise :class:`TapPathError` (a ``KeyError``) naming each unknown
    path and the closest existing names, and each path of a container
    without a forward (a ``ModuleList``, ``ModuleDict``), which never runs,
    with what to tap instead."""
    modules = dict(model.named_modules())
    # suggestions name only modules that can run
    names = [name for name, module in modules.items()
             if name and not never_runs(module)]
    problems = []
    for tap in taps:
        module = modules.get(tap.path) if tap.path else None
        if module is not None and never_runs(module):
            problems.append(_container_problem(tap, modules, owner))
        elif module is None:
            close = difflib.get_close_matches(tap.path, names, n=5, cutoff=0.5)
            if not close:
                parent = tap.path.rsplit('.', 1)[0]
                close = [n for n in names if n.startswith(parent + '.')][:5]
            hint = (', '.join(repr(c) for c in close)
                    if close else 'no similar name')
            problems.append(
                f'  {tap.path!r} is not a module of the {owner} '
                f'(closest: {hint})')
    if problems:
        top = sorted({n.split('.')[0] for n in names})
        raise TapPathError(
            f'{owner.capitalize()} tap path(s) that cannot record:\n' +
            '\n'.join(problems) +
            f'\nTop-level modules of the {owner}: {top}. A path is a name '
            'from model.named_modules(), e.g. "neck.fpn_convs.0.conv"; '
            '"backbone[3]" is element 3 of what the backbone returns (one '
            'map per stage). tools/analysis/suggest_pairs.py lists the '
            'layers worth tapping.')


class TapPathError(UnknownNameError):
    """An unknown module path (a ``KeyError`` printing its message
    unquoted)."""


class StopForward(BaseException):
    """Raised by a hook once every tap of a stopping recorder is filled.

    A ``BaseException``, so that an ``except Exception`` inside a model's
    forward does not swallow it."""


class FeatureRecorder:
    """Records tapped features of one model during a forward pass.

    Hooks are attached only inside :meth:`record`, so the model can be
    copied or pickled freely between steps.

    Args:
        model (nn.Module): The model whose modules are tapped.
        taps (dict): Name -> :class:`Tap`.
        owner (str): ``'student'`` or ``'teacher'``, used in messages.
    """

    def __init__(self, model: nn.Module, taps: Dict[str, Tap],
                 owner: str) -> None:
        check_paths(model, list(taps.values()), owner)
        self.model = model
        self.taps = dict(taps)
        self.owner = owner
        self._by_module: Dict[tuple, List[str]] = {}
        for name, tap in self.taps.items():
            key = (tap.path, tap.source)
            self._by_module.setdefault(key, []).append(name)

    def _select(self, name: str, value):
        tap = self.taps[name]
        index = tap.index
        if tap.source == 'input' and index is None:
            index = 0  # the first positional argument
        if index is not None:
            if not isinstance(value, (tuple, list)):
                raise TypeError(
                    f'{self.owner} tap {tap} has an index, but '
                    f'{tap.path!r} gives a {type(value).__name__}; remove '
                    'the index.')
            if not -len(value) <= index < len(value):
                raise IndexError(
                    f'{self.owner} tap {tap}: {tap.path!r} gives '
                    f'{len(value)} values, index {index} is out of range.')
            value = value[index]
        if not isinstance(value, torch.Tensor):
            kind = type(value).__name__
            is_seq = isinstance(value, (tuple, list))
            size = f' of {len(value)}' if is_seq else ''
            raise TypeError(
                f'{self.owner} tap {tap} gives a {kind}{size}, not a tensor; '
                f'pick one element, e.g. "{tap.path}[0]".')
        return value

    @contextmanager
    def record(self,
               stop_when_done: bool = False,
               on_feature: Optional[Callable[[str, torch.Tensor], None]] = None
               ) -> Iterator[dict]:
        """Attach the hooks; yield the dict that fills with name -> tensor.

        Args:
            stop_when_done (bool): Raise :class:`StopForward` as soon as every
                tap is filled, so the rest of the model does not run. The
                caller catches it.
            on_feature (Callable, optional): Called as ``on_feature(name,
                tensor)`` right after a tap is recorded, inside the model's
                forward (taps of one module in the order of ``taps``).
        """
        features: Dict[str, torch.Tensor] = {}
        self._versions: Dict[str, int] = {}
        calls = {key: 0 for key in self._by_module}
        handles = []

        def make_hook(key):

            def store(value):
                count = calls[key]
                calls[key] += 1
                for name in self._by_module[key]:
                    if self.taps[name].call == count:
                        feature = self._select(name, value)
                        if self.taps[name].clone:
                            feature = feature.clone()
                        features[name] = feature
                        self._versions[name] = feature._version
                        if on_feature is not None:
                            on_feature(name, feature)
                if stop_when_done and len(features) == len(self.taps):
                    raise StopForward

            if key[1] == 'input':
                return lambda module, args: store(args)
            return lambda module, args, output: store(output)

        # Looked up at every call: the runner may have replaced modules since
        # the build (SyncBN reverted or converted, DDP wrapping); along the
        # path only, not over the whole model.
        for key in self._by_module:
            module = self.model.get_submodule(key[0])
            hook = make_hook(key)
            if key[1] == 'input':
                handles.append(module.register_forward_pre_hook(hook))
            else:
                handles.append(module.register_forward_hook(hook))
        try:
            yield features
        finally:
            for handle in handles:
                handle.remove()

    def check_complete(self, features: dict, mode: str) -> None:
        """Raise naming every tap that did not run in the last forward, or
        whose recorded tensor the model changed in place afterwards."""
        missing = [str(self.taps[n]) for n in self.taps if n not in features]
        if missing:
            raise RuntimeError(
                f'These {self.owner} taps did not run during the '
                f'{mode} forward: {missing}. Tap a module on the path of '
                f'that forward, or raise "call" only up to the number of '
                'times the module runs.')
        changed = [
            str(self.taps[n]) for n, value in features.items()
            if value._version != self._versions.get(n, value._version)
        ]
        if changed:
            raise RuntimeError(
                f'These {self.owner} taps were changed in place after they '
                f'were recorded (e.g. by a following ReLU(inplace=True)), so '
                f'they no longer hold the module\'s output: {changed}. Tap '
                'the module that changes them instead, or record a copy with '
                'dict(path=..., clone=True).')
