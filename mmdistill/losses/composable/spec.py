"""How :class:`ComposableLoss` reads a piece's spec (``'abs'`` or
``dict(type=..., **kwargs)``) and checks its arguments at build time."""
import inspect
from typing import Tuple, Union

import torch

from mmdistill.utils.names import did_you_mean

Spec = Union[str, dict]


def _split_spec(spec: Spec, kind: str, names) -> Tuple[str, dict]:
    """``'abs'`` or ``dict(type='softmax', dims='hw')`` -> (name, kwargs)."""
    if isinstance(spec, str):
        name, kwargs = spec, {}
    elif isinstance(spec, dict) and 'type' in spec:
        kwargs = dict(spec)
        name = kwargs.pop('type')
    else:
        raise ValueError(
            f'ComposableLoss: a {kind} is a name or a dict with a "type" '
            f'key, got {spec!r}.')
    if name not in names:
        raise ValueError(
            f'ComposableLoss: unknown {kind} {name!r}'
            f'{did_you_mean(name, names)}. Known: {", ".join(sorted(names))}.')
    return name, kwargs


def _check_kwargs(fn, kwargs: dict, kind: str, name: str,
                  positional: int) -> None:
    """Raise at build time for arguments ``fn`` does not take (after its
    first ``positional`` parameters, the tensors)."""
    if isinstance(fn, type(torch.abs)) or not kwargs:
        if kwargs:
            raise ValueError(f'ComposableLoss: the {kind} {name!r} takes no '
                             f'arguments, got {sorted(kwargs)}.')
        return
    params = list(inspect.signature(fn).parameters)[positional:]
    unknown = sorted(set(kwargs) - set(params))
    if unknown:
        takes = params or 'no arguments'
        raise ValueError(
            f'ComposableLoss: the {kind} {name!r} takes {takes}, got '
            f'unknown {unknown}.')
