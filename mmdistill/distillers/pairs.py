"""Distillation pairs: the ``distill`` config read into one object per pair.

``distill`` maps a config name to a group of pairs::

    distill = dict(
        fpn=dict(student='neck.fpn_convs.{0-4}.conv',
                 teacher='neck.fpn_convs.{0-4}.conv',
                 connector=dict(type='MLPConnector', in_channels='auto',
                                out_channels='auto'),
                 loss=dict(type='L2Loss', loss_weight='auto')))

A ``{0-4}`` group expands to pairs ``fpn_0`` ... ``fpn_4``; ``connector`` and
``loss`` are one config copied to every level, or a list with one config per
level. :func:`parse_pairs` does all of it, before anything is built, and
:class:`Pair` keeps where each value came from, so that messages and the
automatic loss weights name the config key to change.

Two values are left for the distiller to fill when the models exist:
``in_channels='auto'`` / ``out_channels='auto'`` of a connector (the channels
of the student and teacher taps, see :func:`resolve_channels`) and
``loss_weight='auto'`` of a loss (measured by ``AutoLossWeightHook``).
"""
import copy
from collections import OrderedDict
from typing import Callable, Dict, List, Optional, Sequence

from mmdistill.connectors.resize import check_resize
from mmdistill.utils.names import did_you_mean
from .taps import Tap, expand_braces, parse_tap

AUTO = 'auto'
PAIR_KEYS = ('student', 'teacher', 'connector', 'loss', 'with_cp')


class Pair:
    """One distillation pair: its taps and its component configs.

    Attributes:
        name (str): ``<group>`` or, for a ``{0-4}`` expansion,
            ``<group>_<level>``.
        student (Tap): Where the student feature is read.
        teacher (Tap): Where the teacher feature is read.
        connector (dict | None): The connector config of this level.
        loss (dict): The loss config of this level; ``loss_weight='auto'``
            is replaced by 1.0 and recorded in ``auto_weight``.
        group (str): The name in ``distill``.
        level (int | None): The level of an expanded group.
        listed (set[str]): ``'connector'``/``'loss'`` when the config gives
            one per level (a list).
        auto_weight (bool): The loss weight is set by ``AutoLossWeightHook``.
        resize (dict | None): The connector config's ``resize``, taken out
            of it (see :mod:`mmdistill.connectors.resize`).
        with_cp (bool): Keep nothing of the connector and loss from the
            forward to the backward but their inputs, and run them again in
            the backward (``torch.utils.checkpoint``), as mmcv's ``with_cp``
            does for a backbone's blocks. Pairs that share embeddings
            (``embeddings_from``) are run again together.
    """

    def __init__(self, name: str, student: Tap, teacher: Tap,
                 connector: Optional[dict], loss: dict,
                 group: Optional[str] = None, level: Optional[int] = None,
                 listed: Sequence[str] = (), with_cp: bool = False) -> None:
        if not isinstance(with_cp, bool):
            raise ValueError(
                f'distill.{name if group is None else group}.with_cp must be '
                f'True or False, got {with_cp!r}.')
        self.with_cp = with_cp
        self.name = name
        self.student = student
        self.teacher = teacher
        self.group = name if group is None else group
        self.level = level
        self.listed = set(listed)
        self.connector = connector
        self.resize = None
        if isinstance(connector, dict) and 'resize' in connector:
            self.resize = check_resize(connector.pop('resize'),
                                       self.config_path('connector'))
        self.auto_weight = isinstance(loss, dict) and \
            loss.get('loss_weight') == AUTO
        if self.auto_weight:
            loss = dict(loss, loss_weight=1.0)
        self.loss = loss

    def config_path(self, what: str) -> str:
        """``distill.fpn.connector``, or ``distill.fpn.connector[2]`` when
        the config gives one per level."""
        path = f'distill.{self.group}.{what}'
        if what in self.listed and self.level is not None:
            path += f'[{self.level}]'
        return path

    @property
    def auto_channels(self) -> List[str]:
        """The connector arguments given as ``'auto'``."""
        if not isinstance(self.connector, dict):
            return []
        return [key for key in ('in_channels', 'out_channels')
                if self.connector.get(key) == AUTO]

    def __str__(self) -> str:
        return (f'pair {self.name!r} (student tap {self.student}, teacher '
                f'tap {self.teacher})')


def per_level(value, count: int, what: str, group: str) -> list:
    """One config per expanded level: a list is indexed, anything else is
    copied to every level."""
    if isinstance(value, (list, tuple)):
        if len(value) != count:
            raise ValueError(
                f'distill.{group}.{what} is a list of {len(value)}, but the '
                f'taps expand to {count} levels.')
        return [copy.deepcopy(v) for v in value]
    return [copy.deepcopy(value) for _ in range(count)]


def _group(name: str, spec) -> List[Pair]:
    if not isinstance(spec, dict) or not {'student', 'teacher', 'loss'
                                          } <= set(spec):
        raise ValueError(
            f'distill.{name} needs student, teacher and loss (and '
            'optionally connector), e.g. dict(student="neck[0]", '
            'teacher="neck[0]", loss=dict(type="L2Loss")).')
    unknown = set(spec) - set(PAIR_KEYS)
    if unknown:
        hints = ''.join(f' {key!r}{did_you_mean(key, PAIR_KEYS)}'
                        for key in sorted(unknown))
        raise ValueError(
            f'distill.{name}: unknown key(s){hints}; a pair takes '
            f'{", ".join(PAIR_KEYS)}.')
    students = expand_braces(spec['student'])
    teachers = expand_braces(spec['teacher'])
    count = max(len(students), len(teachers))
    students = students * count if len(students) == 1 else students
    teachers = teachers * count if len(teachers) == 1 else teachers
    if len(students) != len(teachers):
        raise ValueError(
            f'distill.{name}: the student taps expand to {len(students)} '
            f'levels and the teacher taps to {len(teachers)}.')
    connectors = per_level(spec.get('connector'), count, 'connector', name)
    losses = per_level(spec['loss'], count, 'loss', name)
    listed = [what for what in ('connector', 'loss')
              if isinstance(spec.get(what), (list, tuple))]
    return [
        Pair(name if count == 1 else f'{name}_{level}',
             parse_tap(students[level]), parse_tap(teachers[level]),
             connectors[level], losses[level], name,
             None if count == 1 else level, listed,
             spec.get('with_cp', False))
        for level in range(count)
    ]


def parse_pairs(distill: Dict[str, dict]) -> 'OrderedDict[str, Pair]':
    """Read the ``distill`` config: pair name -> :class:`Pair`, in config
    order. Raises ``ValueError`` naming the config key on anything that
    does not fit."""
    if not distill:
        raise ValueError('distill is empty: name at least one pair.')
    pairs: 'OrderedDict[str, Pair]' = OrderedDict()
    for name, spec in distill.items():
        for pair in _group(name, spec):
            if pair.name in pairs:
                raise ValueError(
                    f'Two distillation pairs are named {pair.name!r}.')
            pairs[pair.name] = pair
    return pairs


def groups_of(pairs: Dict[str, Pair]) -> 'OrderedDict[str, List[str]]':
    """Config name -> the names of its (expanded) pairs."""
    groups: 'OrderedDict[str, List[str]]' = OrderedDict()
    for pair in pairs.values():
        groups.setdefault(pair.group, []).append(pair.name)
    return groups


def resolve_channels(pairs: Dict[str, Pair],
                     measure: Callable[[], Dict[str, tuple]]) -> None:
    """Replace ``in_channels='auto'`` / ``out_channels='auto'`` in the
    connector configs by the channels of the student / teacher tap.

    Args:
        pairs: The pairs (their connector configs are changed in place).
        measure: Called once, only when some pair asks: runs both models
            on a dummy batch and returns pair name -> (student channels,
            teacher channels), None where a tap gives no channel axis.
    """
    wanted = [p for p in pairs.values() if p.auto_channels]
    if not wanted:
        return
    channels = measure()
    for pair in wanted:
        for key, have in zip(('in_channels', 'out_channels'),
                             channels[pair.name]):
            if key not in pair.auto_channels:
                continue
            if have is None:
                side = 'student' if key == 'in_channels' else 'teacher'
                raise ValueError(
                    f'{pair}: {pair.config_path("connector")}.{key}=\'auto\''
                    f' needs a feature with a channel axis, but the {side} '
                    'tap gives none: give the number.')
            pair.connector[key] = int(have)


def link_shared_embeddings(pairs: Dict[str, Pair],
                           connectors) -> List[List[str]]:
    """Link each connector whose config names ``embeddings_from`` (TaT's
    shared theta, phi, gamma) to the connector of that pair.

    Args:
        pairs: The pairs, by name.
        connectors: The built connectors, by pair name.

    Returns:
        list[list[str]]: The groups of pairs that share embeddings, each in
        the pairs' order (a step computes a group's embeddings once).
    """
    group_of = {name: [name] for name in pairs}
    for name, connector in connectors.items():
        source = getattr(connector, 'embeddings_from', None)
        if source is None:
            continue
        pair = pairs[name]
        where = f'{pair.config_path("connector")}.embeddings_from'
        if source == name or source not in connectors:
            raise ValueError(
                f'{pair}: {where}={source!r} must name another pair with a '
                f'connector; the pairs with connectors are '
                f'{sorted(n for n in connectors if n != name)}.')
        if getattr(connectors[source], 'embeddings_from', None) is not None:
            raise ValueError(
                f'{pair}: {where}={source!r} names a pair that itself takes '
                f'its embeddings from '
                f'{connectors[source].embeddings_from!r}: name that pair.')
        other = pairs[source]
        taps = (str(pair.student), str(pair.teacher))
        if (str(other.student), str(other.teacher)) != taps:
            raise ValueError(
                f'{pair}: {where}={source!r} names {other}, which taps other '
                'layers; pairs that share embeddings tap the same student '
                'and teacher layers.')
        try:
            connector.share_embeddings(connectors[source])
        except (TypeError, ValueError) as err:
            raise type(err)(f'{pair}: {where}: {err}') from err
        merged = group_of[name] + [n for n in group_of[source]
                                   if n not in group_of[name]]
        for member in merged:
            group_of[member] = merged
    groups = []
    for name in pairs:
        group = [n for n in pairs if n in group_of[name]]
        if len(group) > 1 and group not in groups:
            groups.append(group)
    return groups
