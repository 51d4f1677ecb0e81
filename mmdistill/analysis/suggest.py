"""Propose distillation pairs for a student and a teacher config, with the
settings of mmdistill's shipped configs, and write a distillation config.

Used by ``tools/analysis/suggest_pairs.py``. Pairs are matched by stride on
the candidates :func:`~mmdistill.analysis.probe.probe_model` finds:

* detectors (``mlp``, ``fgd``, ``mgd``, ``cwd``, ``lad``, ``cad``): the FPN
  levels of equal stride; every level for one-stage detectors and for CWD,
  the levels computed by their own convolution (4 of Faster R-CNN's 5, as
  the FGD / MGD / MLP-connector-paper two-stage settings) for two-stage
  ones;
* segmentors (``mlp``, ``lad``, ``cad``, ``tat``, ``mgd``): the teacher's last
  backbone stage and the student's last stage at the same stride; ``cwd``
  (and the logits term of ``lad``/``cad``) the decode heads' logits.

Loss and connector settings and weights are read from the shipped config of
the method and task (one-stage or two-stage detector; homogeneous or
heterogeneous segmentor), with the channels of the probed models filled in.
"""
import ast
import copy
import functools
import keyword
import os
import os.path as osp
import re
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn as nn

from mmdistill.utils.config import config_bases

from .probe import (HEAD, LEVEL, STAGE, Candidate, Probe, loss_types,
                    profile_of)

METHODS = ('mlp', 'fgd', 'mgd', 'cwd', 'lad', 'cad', 'tat', 'kd', 'dkd',
           'dist')
#: the methods on a classifier's logits (mmpretrain)
LOGIT_METHODS = ('kd', 'dkd', 'dist')

#: the folder of configs/ that holds each method's configs
FOLDERS = dict(mlp='mlp', fgd='fgd', mgd='mgd', cwd='cwd', lad='angular',
               cad='angular', tat='tat', kd='kd', dkd='dkd', dist='dist')
#: variants: a detector without / with an RoI head; a segmentor with the
#: teacher's decode head type / another one; a classifier
VARIANTS = ('det-one', 'det-two', 'seg-homo', 'seg-hetero', 'cls')

#: settings no shipped config holds yet, each from its method's official
#: configs; applied on top of the nearest shipped config (``base``)
UNSHIPPED = {
    ('mgd', 'det-two'): dict(
        base=('mgd', 'det-one'),
        connector=dict(mask_ratio=0.45), loss=dict(loss_weight=5e-7),
        inherit=False,
        source='the settings of yzd-v/MGD det/configs/distillers/mgd/'
        'cascade_mask_rcnn_'
        'rx101_32x4d_distill_faster_rcnn_r50_fpn_2x_coco.py (alpha 5e-7, '
        'mask ratio 0.45, 4 FPN levels, no inheriting)'),
    ('mgd', 'seg'): dict(
        base=('mgd', 'det-one'),
        connector=dict(mask_ratio=0.75), loss=dict(loss_weight=2e-5),
        inherit=False, optim=False,
        source='the settings of yzd-v/MGD seg/configs/distillers/mgd/'
        'psp_r101_distill_*_'
        '40k_512x512_city.py (alpha 2e-5, mask ratio 0.75, last backbone '
        'stage)'),
    ('lad', 'det'): dict(
        base=('lad', 'seg-homo'), roles=('stage', ),
        source='the angular-distillation paper (Liu et al., WACV 2024) is '
        'evaluated on segmentation: its backbone '
        'setting (ConvConnector, AngularLoss weight 10) is applied to each '
        'FPN level as a starting point, not a tuned detection setting'),
    ('cad', 'det'): dict(
        base=('cad', 'seg-homo'), roles=('stage', ),
        source='the angular-distillation paper (Liu et al., WACV 2024) is '
        'evaluated on segmentation: its backbone '
        'setting (ConvConnector, AngularLoss weight 10) is applied to each '
        'FPN level as a starting point, not a tuned detection setting'),
}

#: losses that compare student and teacher features of equal shape
_SAME_SHAPE_LOSSES = ('L2Loss', 'MSELoss', 'ChannelWiseDivergence',
                      'AngularLoss', 'MagnitudeLoss', 'MGDLoss', 'ATLoss',
                      'ComposableLoss', 'PixelKLDivergence')
#: the 1x1 alignment of mmrazor and the angular-distillation paper when
#: channels differ
ALIGN = dict(type='ConvConnector', kernel_size=1, num_convs=1)
#: the user fills this in; a run stops on it (teacher checkpoint not found)
FILL_ME = 'FILL ME'


class SuggestError(ValueError):
    """No pairs can be proposed (the message says why and what to do)."""


def configs_root() -> str:
    """The shipped configs: ``configs/`` of a source checkout, else the
    copy installed in ``mmdistill/.mim/configs``."""
    import mmdistill
    package = osp.dirname(osp.abspath(mmdistill.__file__))
    for path in (osp.join(osp.dirname(package), 'configs'),
                 osp.join(package, '.mim', 'configs')):
        if osp.isdir(osp.join(path, 'mlp')):
            return path
    raise FileNotFoundError(
        'The shipped configs of mmdistill are not found (configs/ next to '
        f'the package, or {package}/.mim/configs): reinstall mmdistill with '
        '"pip install -e ." from its source checkout.')


# ------------------------------------------------------------ the settings
def _role_of(tap) -> str:
    path = tap['path'] if isinstance(tap, dict) else str(tap)
    if path.startswith('backbone'):
        return STAGE
    if path.startswith('neck'):
        return LEVEL
    return 'logits'


_SAFE_CALLS = {'dict': dict, 'list': list, 'tuple': tuple}


def _literal(node: ast.AST) -> Any:
    """Evaluate a config value made of literals and ``dict(...)`` calls."""
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) \
            and node.func.id in _SAFE_CALLS and not node.args:
        return {k.arg: _literal(k.value) for k in node.keywords}
    return ast.literal_eval(node)


@dataclass
class Settings:
    """What a method takes from its shipped config."""
    source: str
    #: name -> role, connector, loss (templates) and ``extra``: the pair's
    #: other settings (``with_cp``), all but its taps
    pairs: Dict[str, dict]
    inherit: List[str] = field(default_factory=list)
    optim_wrapper: Optional[dict] = None
    hooks: List[dict] = field(default_factory=list)
    notes: List[str] = field(default_factory=list)
    #: what the shipped config changes in its student (KD: the weight of
    #: the student's own loss), merged into the student written
    student: Optional[dict] = None
    #: the losses its student trains with (:func:`~.probe.loss_types`)
    student_losses: Tuple[str, ...] = ()


def method_of(model: dict) -> Optional[str]:
    """Which of :data:`METHODS` a distiller config uses, from its losses
    and connectors (``None`` for others, e.g. ViT attention)."""
    found = set()
    for spec in model.get('distill', {}).values():
        loss = spec.get('loss') or {}
        loss = loss[0] if isinstance(loss, list) else loss
        connector = spec.get('connector') or {}
        connector = connector[0] if isinstance(connector, list) else \
            connector
        kind, conn = loss.get('type'), connector.get('type')
        if conn == 'TaTConnector':
            found.add('tat')
        elif kind == 'L2Loss' and conn == 'MLPConnector':
            found.add('mlp')
        elif kind == 'FGDLoss':
            found.add('fgd')
        elif kind == 'MGDLoss':
            found.add('mgd')
        elif kind == 'ChannelWiseDivergence':
            found.add('cwd')
        elif kind == 'AngularLoss':
            found.add({'layer': 'lad', 'channel': 'cad'}.get(
                loss.get('mode', 'layer'), 'pad'))
        elif kind in ('KDLoss', 'DKDLoss', 'DISTLoss'):
            found.add(kind[:-4].lower())
    found &= set(METHODS)
    return found.pop() if len(found) == 1 else None


@functools.lru_cache(maxsize=None)
def _load_config(path: str):
    from mmdistill.utils.config import load_config
    return load_config(path)


@functools.lru_cache(maxsize=None)
def classify(path: str, mtime: float = 0.0) -> Optional[Tuple[str, str]]:
    """(method, variant) of a shipped distillation config, read from its
    content (not its file name); None for other configs."""
    from mmdistill.testing.batches import KIND_OF_SCOPE
    cfg = _load_config(path)
    model = cfg.get('model') or {}
    if model.get('type') != 'mmdistill.SingleTeacherDistiller':
        return None
    method = method_of(model)
    kind = KIND_OF_SCOPE.get(cfg.get('default_scope'))
    if method is None or kind not in ('det', 'seg', 'cls'):
        return None
    student = model.student
    if kind == 'cls':
        return method, 'cls'
    if kind == 'det':
        return method, 'det-two' if student.get('roi_head') else 'det-one'
    teacher = _load_config(model.teacher.config).model
    same = student.get('decode_head', {}).get('type') == \
        teacher.get('decode_head', {}).get('type')
    return method, 'seg-homo' if same else 'seg-hetero'


def _scope_of_file(path: str, seen: Tuple[str, ...] = ()) -> Optional[str]:
    """The OpenMMLab package (``mmdet``/``mmseg``/``mmpretrain``) a config
    inherits from, following its local ``_base_`` files: a cheap filter
    before loading it."""
    for base in config_bases(path):
        if '::' in base:
            return base.split('::', 1)[0]
        local = osp.normpath(osp.join(osp.dirname(path), base))
        if osp.isfile(local) and local not in seen:
            found = _scope_of_file(local, seen + (path, ))
            if found:
                return found
    return None


def _shipped_profiles(path: str) -> Tuple[dict, dict]:
    """(student, teacher) profiles (:func:`~.probe.profile_of`) of a
    shipped distillation config: its student with its crop and schedule,
    and the model of its teacher config."""
    cfg = _load_config(path)
    student = profile_of(cfg, cfg.model.student)
    teacher = {}
    config = cfg.model.teacher.get('config')
    if isinstance(config, str):
        try:
            teacher = profile_of(_load_config(config))
        except (OSError, ValueError):  # only the ranking loses it
            teacher = {}
    return student, teacher


def _names_shared(a: Optional[dict], b: Optional[dict]) -> int:
    """How many model names (:func:`~.probe.model_names`) two profiles
    share."""
    a = (a or {}).get('names') or {}
    b = (b or {}).get('names') or {}
    return sum(1 for k, v in a.items() if k in b and b[k] == v)


def _closeness(path: str, student: Optional[dict],
               teacher: Optional[dict]) -> Tuple[int, ...]:
    """How well a shipped config fits the profiles of the models to
    distil: model names of the student and of the teacher first, then the
    student's training crop and schedule."""
    shipped_student, shipped_teacher = _shipped_profiles(path)
    s_names = (student or {}).get('names') or {}
    same_student = bool(s_names) and s_names == shipped_student['names']
    same_teacher = bool((teacher or {}).get('names')) and \
        teacher['names'] == shipped_teacher.get('names')
    return (int(same_student) + int(same_teacher),
            _names_shared(student, shipped_student),
            _names_shared(teacher, shipped_teacher),
            int(student is not None and student.get('crop') is not None
                and student['crop'] == shipped_student['crop']),
            int(student is not None and student.get('schedule') is not None
                and student['schedule'] == shipped_student['schedule']))


def find_source(method: str, variant: str,
                backbone: Optional[str] = None,
                student: Optional[dict] = None,
                teacher: Optional[dict] = None) -> Optional[str]:
    """The shipped config of ``method`` for ``variant``, found by content in
    the method's folder.

    Among the configs of the variant, the one closest to the models to
    distil is taken: the same student and teacher model names (types,
    backbone depth), then the student's training crop, then its schedule
    (a 512 x 1024, 80k-iteration PSPNet student gets the 80k
    ``512x1024`` config, not the 40k ``512x512`` one); without profiles,
    the first by name whose student has the backbone type ``backbone``,
    else the first by name.

    Args:
        method (str): One of :data:`METHODS`.
        variant (str): One of :data:`VARIANTS`.
        backbone (str, optional): The student's backbone type.
        student (dict, optional): The student's profile
            (:func:`~.probe.profile_of`).
        teacher (dict, optional): The teacher's profile.

    Returns:
        str | None: The path; None if no shipped config matches.
    """
    scope = {'det': 'mmdet', 'seg': 'mmseg',
             'cls': 'mmpretrain'}[variant.split('-')[0]]
    folder = osp.join(configs_root(), FOLDERS[method])
    found = []
    for name in sorted(n for n in os.listdir(folder) if n.endswith('.py')):
        path = osp.join(folder, name)
        if _scope_of_file(path) != scope:
            continue
        if classify(path, osp.getmtime(path)) == (method, variant):
            found.append(path)
    if not found:
        return None

    def same_backbone(path: str) -> int:
        model = _load_config(path).model.student
        return int(backbone is not None and
                   model.get('backbone', {}).get('type') == backbone)

    if student is None and teacher is None:
        return max(found, key=same_backbone)  # max keeps the first best
    return max(found, key=lambda p: _closeness(p, student, teacher)
               + (same_backbone(p), ))


def top_level_value(path: str, name: str) -> Any:
    """The value a config file assigns to ``name`` itself or through its
    local ``_base_`` files (not the OpenMMLab bases), or None."""
    with open(path, encoding='utf-8') as f:
        tree = ast.parse(f.read(), path)
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(
                isinstance(t, ast.Name) and t.id == name
                for t in node.targets):
            return _literal(node.value)
    for base in config_bases(path):
        if '::' not in base:
            local = osp.normpath(osp.join(osp.dirname(path), base))
            if osp.isfile(local):
                found = top_level_value(local, name)
                if found is not None:
                    return found
    return None


def load_settings(method: str, variant: str,
                  backbone: Optional[str] = None,
                  student: Optional[dict] = None,
                  teacher: Optional[dict] = None) -> Settings:
    """Read the pair templates (connector and loss configs, by role) and
    the extras (``init_student_from_teacher``, ``optim_wrapper``,
    ``custom_hooks``) of ``method``'s shipped config for ``variant``
    (``'det-one'``, ``'det-two'``, ``'seg-homo'``, ``'seg-hetero'``).

    The shipped config is found by content (:func:`find_source`). Without
    one, a documented setting of :data:`UNSHIPPED` is applied to the
    nearest shipped config, or a segmentor takes the other segmentation
    variant's config; each such case is named in ``notes``.

    Args:
        method (str): One of :data:`METHODS`.
        variant (str): One of :data:`VARIANTS`.
        backbone (str, optional): The student's backbone type: a shipped
            config with that student backbone is preferred (the settings
            agree; the named source is then the closest one).
        student (dict, optional): The student's profile
            (:func:`~.probe.profile_of`): the shipped config closest to
            it and to ``teacher`` is taken (:func:`find_source`).
        teacher (dict, optional): The teacher's profile.

    Raises:
        SuggestError: No shipped or documented setting exists.
    """
    kind = variant.split('-')[0]
    if method not in METHODS:
        raise SuggestError(f'--method must be one of {METHODS}, got '
                           f'{method!r}.')
    extra, notes = None, []
    path = find_source(method, variant, backbone, student, teacher)
    if path is None:
        extra = UNSHIPPED.get((method, variant)) or \
            UNSHIPPED.get((method, kind))
        if extra is not None:
            path = find_source(*extra['base'])
            notes.append('no shipped config for this case: '
                         + extra['source'])
        elif kind == 'seg':
            other = 'seg-hetero' if variant == 'seg-homo' else 'seg-homo'
            path = find_source(method, other, backbone, student, teacher)
            if path is not None:
                notes.append(
                    f'no shipped {method} config for a '
                    + ('homogeneous' if variant == 'seg-homo' else
                       'heterogeneous') + ' pair (same / other decode head);'
                    ' the settings of the other one are used')
    if path is None:
        raise SuggestError(_unsupported(method, kind))
    cfg = _load_config(path)
    model = cfg.model
    pairs = {}
    for name, spec in model.distill.items():
        role = _role_of(spec['student'])
        extra_keys = [k for k in spec
                      if k not in ('student', 'teacher', 'connector', 'loss')]
        pairs[name] = dict(role=role,
                           connector=copy.deepcopy(spec.get('connector')),
                           loss=copy.deepcopy(spec['loss']),
                           extra={k: copy.deepcopy(spec[k])
                                  for k in extra_keys})
    inherit = list(model.get('init_student_from_teacher') or [])
    optim = top_level_value(path, 'optim_wrapper')
    try:
        written = top_level_value(path, 'model')
    except ValueError:  # not literals ({{_base_.model}}, variables)
        written = None
    student_changes = written.get('student') if isinstance(
        written, dict) else None
    hooks = [dict(h) for h in (cfg.get('custom_hooks') or [])]
    if extra is not None:
        for spec in pairs.values():
            if extra.get('connector') and spec['connector'] is not None:
                spec['connector'].update(extra['connector'])
            if extra.get('loss'):
                spec['loss'].update(extra['loss'])
        if 'roles' in extra:
            pairs = {n: s for n, s in pairs.items()
                     if s['role'] in extra['roles']}
        if extra.get('inherit') is False:
            inherit = []
        if extra.get('optim') is False:
            optim = None
    source = osp.relpath(path, osp.dirname(configs_root()))
    # a documented setting replaced the weights: they were not set against
    # this config's student
    losses = loss_types(model.student) if extra is None else ()
    return Settings(source, pairs, inherit, optim, hooks, notes,
                    student_changes if isinstance(student_changes, dict)
                    else None, losses)


def loss_scale_note(settings: Settings, student: Probe) -> Optional[str]:
    """When the student trains with other losses than the shipped config's
    student: its weights may make the distillation too strong or too weak
    against them."""
    mine = tuple((student.profile or {}).get('losses') or ())
    shipped = tuple(settings.student_losses)
    if not mine or not shipped or mine == shipped:
        return None
    return (f'the loss weights are those of {settings.source}, set against '
            f"its student's own losses ({', '.join(shipped)}); this student "
            f"trains with {', '.join(mine)}, of another scale, so the "
            'distillation may be too strong or too weak: compare the logged '
            "loss_distill_* with the student's losses over the first "
            "iterations, or give the pairs loss_weight='auto' with "
            "dict(type='mmdistill.AutoLossWeightHook') in custom_hooks, "
            'which measures the weight on the run')


def classifier_layer(probe: Probe) -> Optional[str]:
    """The path of a classifier's last linear layer (its logits), or None.

    Args:
        probe (Probe): A probed mmpretrain classifier.

    Returns:
        str | None: ``'head.fc'`` for a ResNet, ``'head.layers.head'`` for
        a ViT, ...
    """
    model = getattr(probe, 'model', None)
    if model is None:
        return None
    found = [name for name, module in model.named_modules()
             if isinstance(module, nn.Linear) and name.startswith('head')]
    # not a distillation-token branch (DeiT's head_dist, EfficientFormer's
    # dist_head), whose logits the prediction only averages in
    classes = [name for name in found
               if not any('dist' in part for part in name.split('.')[1:])]
    found = classes or found
    return found[-1] if found else None


def _classifier_advice(method: str) -> str:
    """What to do for two mmpretrain classifiers with a ``method`` of
    detectors and segmentors."""
    return (f'--method {method} distils detectors and segmentors. Two '
            'mmpretrain classifiers are distilled on their logits: --method '
            'kd, dkd or dist; two ViTs also on their attention, '
            "configs/vit_attention (their blocks' attn.qkv).")


def classifier_pair(student: Probe, teacher: Probe
                    ) -> Tuple[Candidate, Candidate]:
    """The logits of two classifiers (:func:`classifier_layer`), of equal
    class count."""

    def logits(probe: Probe) -> Candidate:
        path = classifier_layer(probe)
        if path is None:
            raise SuggestError(f'No classifier layer found in the head of '
                               f'{probe.config}.')
        found = [c for c in probe.by_role(HEAD) if c.path == path]
        if found:
            return found[-1]
        # a head that averages branches (DeiT-distilled's class and
        # distillation tokens) returns no layer's output: its class branch
        layer = probe.model.get_submodule(path)
        return Candidate(path, HEAD, (1, layer.out_features), None)

    s, t = logits(student), logits(teacher)
    if s.channels != t.channels:
        raise SuggestError(
            f'The logits have {s.channels} (student, {s.path}) and '
            f'{t.channels} (teacher, {t.path}) classes: logit distillation '
            'needs the same classes. Use a teacher trained on the same '
            'dataset.')
    return s, t


def _unsupported(method: str, kind: str) -> str:
    if method in LOGIT_METHODS:
        return (f'{method.upper()} distils the logits of mmpretrain '
                'classifiers. For a segmentor\'s logits use --method cwd; '
                'for a detector --method fgd, mgd, cwd or mlp.')
    if method == 'fgd':
        return ('FGD needs ground-truth boxes (its focal masks): it '
                'distils detectors. For a segmentor use --method mlp, lad, '
                'cad, tat or cwd.')
    if method == 'tat':
        return ('TaT is shipped for segmentors (configs/tat); for a '
                'detector use --method fgd, mgd, cwd or mlp.')
    return f'No setting of --method {method} for {kind} models.'


# ---------------------------------------------------------------- matching
def _same_place(a: Candidate, b: Candidate) -> bool:
    return a.stride is not None and a.stride == b.stride and \
        a.spatial == b.spatial


def level_pairs(student: Probe, teacher: Probe, own_conv_only: bool,
                by_index: bool) -> Tuple[List[Tuple[Candidate, Candidate]],
                                         List[str]]:
    """FPN levels of equal stride, in the teacher's order.

    Args:
        own_conv_only (bool): Keep only levels computed by a module of
            their own in both models (two-stage setting: FPN's max-pooled
            5th level has none and adds nothing P5 does not give).
        by_index (bool): Tap the neck's outputs by index (``neck[i]``, the
            shipped CWD configs).

    Returns:
        tuple: the pairs and notes.
    """
    notes = []
    s_levels, t_levels = student.by_role(LEVEL), teacher.by_role(LEVEL)
    if not s_levels or not t_levels:
        who = 'student' if not s_levels else 'teacher'
        raise SuggestError(
            f'The {who} has no neck outputs (FPN levels) to distil; the '
            'detection settings tap FPN levels. Check the config, or write '
            'the pairs by hand from the candidates listed above.')
    pairs, unmatched = [], []
    used = set()
    for t in t_levels:
        match = next((s for s in s_levels if id(s) not in used and
                      _same_place(s, t)), None)
        if match is None:
            unmatched.append(t)
            continue
        used.add(id(match))
        pairs.append((match, t))
    if unmatched:
        notes.append('teacher levels without a student level of the same '
                     'stride are left out: ' + ', '.join(
                         f'{c.describe_tap()} (stride {c.stride})'
                         for c in unmatched))
    if own_conv_only and not by_index:
        kept = [(s, t) for s, t in pairs
                if not s.by_index and not t.by_index]
        if len(kept) < len(pairs):
            notes.append(
                'two-stage detector: the levels computed by their own FPN '
                'convolution are distilled (' + str(len(kept)) + ' of ' +
                str(len(pairs)) + '), as in the two-stage settings of FGD, '
                'MGD and the MLP-connector paper')
        pairs = kept
    if not pairs:
        raise SuggestError(
            'No FPN level of the student has the stride and size of a '
            'teacher level (student strides '
            f'{[c.stride for c in s_levels]}, teacher strides '
            f'{[c.stride for c in t_levels]}). Use a student and a teacher '
            'whose necks give the same levels.')
    return pairs, notes


def last_stage_pair(student: Probe, teacher: Probe
                    ) -> Tuple[Candidate, Candidate]:
    """The teacher's last backbone stage and the student's last stage at
    the same stride; when no student stage has it, the student's last
    stage (its map is then resized, see :func:`resize_for`)."""
    t_stages = [c for c in teacher.by_role(STAGE) if c.spatial]
    s_stages = [c for c in student.by_role(STAGE) if c.spatial]
    if not t_stages or not s_stages:
        raise SuggestError('No backbone stage with a feature map was found '
                           'in the ' + ('teacher' if not t_stages else
                                        'student') + '.')
    returned = [c for c in t_stages if c.index is not None]
    t_last = max(returned or t_stages, key=lambda c: (c.index or 0, c.order))
    same = [c for c in s_stages if _same_place(c, t_last)]
    if not same:
        return _last_stage(student), t_last
    return max(same, key=lambda c: c.order), t_last


def resize_for(s: Candidate, t: Candidate) -> Optional[dict]:
    """The connector's ``resize`` that brings the student map ``s`` to the
    teacher's size: None when the sizes are equal, ``'pool'`` to shrink,
    ``'bilinear'`` otherwise."""
    if not s.spatial or not t.spatial or s.spatial == t.spatial:
        return None
    larger = all(a >= b for a, b in zip(s.spatial, t.spatial))
    return dict(mode='pool') if larger else dict(mode='bilinear')


def _with_resize(spec: dict, resize: dict) -> dict:
    """``spec`` whose connector resizes the student map (an
    ``IdentityConnector`` when it has none), keys in the written order."""
    connector = copy.deepcopy(spec.get('connector')) or \
        dict(type='IdentityConnector')
    connector['resize'] = resize
    out = dict(student=spec['student'], teacher=spec['teacher'],
               connector=connector)
    out.update((k, v) for k, v in spec.items() if k not in out)
    return out


def _resize_note(s: Candidate, t: Candidate, resize: dict) -> str:
    how = 'shrinks' if resize['mode'] == 'pool' else 'upsamples'
    return (f"the student's {s.describe_tap()} (stride {s.stride}, "
            f"{_spatial_text(s)}) and the teacher's {t.describe_tap()} "
            f'(stride {t.stride}, {_spatial_text(t)}) differ in size, and no '
            'student layer of this role has the teacher\'s: the '
            f"connector's resize=dict(mode={resize['mode']!r}) {how} the "
            "student map to the teacher's before the connector (README "
            '"What gets paired"); a student with the teacher\'s output '
            'stride (a dilated "-d8" backbone for a d8 teacher) needs none')


def _last_stage(probe: Probe) -> Optional[Candidate]:
    """A model's last backbone stage with a map: the last one its backbone
    returns, else the last found."""
    stages = [c for c in probe.by_role(STAGE) if c.spatial]
    returned = [c for c in stages if c.index is not None]
    if not stages:
        return None
    return max(returned or stages, key=lambda c: (c.index or 0, c.order))


def shallower_stage_notes(student: Probe, s: Candidate,
                          t: Candidate) -> List[str]:
    """A note when the paired student stage is not the student's last
    stage (the last one has another stride than the teacher's stage):
    the proposal stands, and the note names the alternative, the last
    stage with a connector that resizes it (``resize=dict(...)``).

    Args:
        student (Probe): The probed student.
        s (Candidate): The student stage paired with ``t``.
        t (Candidate): The teacher's tapped stage.

    Returns:
        list[str]: The note, or nothing when ``s`` is the last stage.
    """
    last = _last_stage(student)
    # index taps (a transformer's ``backbone[i]``) share their path
    if last is None or last is s or \
            last.describe_tap() == s.describe_tap() or \
            last.stride == s.stride:
        return []
    ratio = (last.stride / t.stride if isinstance(last.stride, int) and
             isinstance(t.stride, int) and t.stride else None)
    if ratio is not None and ratio > 1:
        mode = "resize=dict(mode='bilinear') (or 'nearest')"
        how = f'upsamples it {ratio:g}x'
    else:
        mode = "resize=dict(mode='pool')"
        how = 'shrinks it'
    return [
        f"the student's stage {s.describe_tap()} (stride {s.stride}, "
        f'{_size(s)}) is paired, not its last stage '
        f'{last.describe_tap()} (stride {last.stride}, {_size(last)}), '
        f"whose stride differs from the teacher's {t.describe_tap()} "
        f'(stride {t.stride}); to distil the last stage instead, tap '
        f'{last.describe_tap()} and add {mode} to the connector, which '
        f"{how} to the teacher's {_spatial_text(t)} map before the "
        'connector (README "What gets paired")']


def _spatial_text(c: Candidate) -> str:
    return ' x '.join(str(v) for v in c.spatial) if c.spatial else _size(c)


def logits_pair(student: Probe, teacher: Probe
                ) -> Tuple[Candidate, Candidate]:
    """The decode heads' logits (the last conv whose output the head
    returns), of equal class count; of another stride, the student's are
    resized (see :func:`resize_for`)."""

    def logits(probe: Probe) -> Candidate:
        heads = [c for c in probe.by_role(HEAD) if c.spatial
                 and c.path.startswith('decode_head')]
        if not heads:
            raise SuggestError(
                f'No decode-head logits found in {probe.config}.')
        return heads[-1]

    s, t = logits(student), logits(teacher)
    if s.channels != t.channels:
        raise SuggestError(
            f'The logits have {s.channels} (student) and {t.channels} '
            '(teacher) classes: logit distillation needs the same classes. '
            'Use a teacher trained on the same dataset.')
    return s, t


def _size(c: Candidate) -> str:
    return 'x'.join(str(v) for v in c.shape)


# --------------------------------------------------------------- building
_NUMBER = re.compile(r'(\d+)')


def brace(taps: Sequence[str]) -> Optional[str]:
    """``['neck.fpn_convs.0.conv', 'neck.fpn_convs.1.conv']`` ->
    ``'neck.fpn_convs.{0-1}.conv'``; one tap is returned as is; None when
    the taps differ elsewhere than in one number."""
    if len(taps) == 1:
        return taps[0]
    parts = [_NUMBER.split(t) for t in taps]
    if any(len(p) != len(parts[0]) for p in parts):
        return None
    diff = [i for i in range(len(parts[0]))
            if len({p[i] for p in parts}) > 1]
    if len(diff) != 1 or diff[0] % 2 == 0:  # odd positions are numbers
        return None
    i = diff[0]
    values = [int(p[i]) for p in parts]
    if len(set(values)) != len(values):
        return None
    if values == list(range(values[0], values[0] + len(values))):
        group = f'{{{values[0]}-{values[-1]}}}'
    else:
        group = '{' + ','.join(str(v) for v in values) + '}'
    head = ''.join(parts[0][:i])
    tail = ''.join(parts[0][i + 1:])
    if '{' in head + tail:
        return None
    return head + group + tail


def _fill(template: Optional[dict], loss: dict, s: Candidate,
          t: Candidate) -> Tuple[Optional[dict], dict, List[str]]:
    """Connector and loss configs of one pair with the probed channels."""
    notes = []
    connector = copy.deepcopy(template)
    loss = copy.deepcopy(loss)
    s_ch, t_ch = s.channels, t.channels
    if connector is not None:
        if 'in_channels' in connector or 'out_channels' in connector:
            connector['in_channels'] = s_ch
            connector['out_channels'] = t_ch
    if loss.get('type') == 'FGDLoss':
        loss['in_channels'] = t_ch
        if s_ch != t_ch:
            loss['student_channels'] = s_ch
        else:
            loss.pop('student_channels', None)
    elif connector is None and s_ch != t_ch and \
            loss.get('type') in _SAME_SHAPE_LOSSES:
        connector = dict(ALIGN, in_channels=s_ch, out_channels=t_ch)
        notes.append(f'{s_ch} student vs {t_ch} teacher channels: a 1x1 '
                     'ConvConnector aligns them (the shipped config has '
                     'equal channels and no connector)')
    return connector, loss, notes


def _collapse(values: List[Any]) -> Any:
    """One value when every level has the same, else the list."""
    first = values[0]
    return first if all(v == first for v in values) else values


def tap_of(c: Candidate, by_index: bool = False):
    """The tap a config writes for ``c``; with ``by_index`` the output of
    its component by index (``neck[2]``, as the shipped CWD configs)."""
    if by_index and c.index is not None:
        return f'{c.path.split(".")[0]}[{c.index}]'
    return c.tap()


def _tap_text(tap) -> str:
    if isinstance(tap, dict):
        extra = ', '.join(f'{k}={v}' for k, v in tap.items() if k != 'path')
        return f'{tap["path"]} ({extra})'
    return tap


def _group(name: str, pairs: List[Tuple[Candidate, Candidate]],
           template: dict,
           by_index: bool) -> Tuple[Dict[str, dict], List[str]]:
    """One ``distill`` entry for a list of pairs (brace syntax), or one
    entry per pair when the taps do not share a pattern."""
    notes = []
    filled = [_fill(template['connector'], template['loss'], s, t)
              for s, t in pairs]
    for _, _, extra in filled:
        for note in extra:
            if note not in notes:
                notes.append(note)

    s_taps = [tap_of(s, by_index) for s, _ in pairs]
    t_taps = [tap_of(t, by_index) for _, t in pairs]
    strings = all(isinstance(x, str) for x in s_taps + t_taps)
    s_brace = brace(s_taps) if strings else None
    t_brace = brace(t_taps) if strings else None
    if len(pairs) == 1 or (s_brace and t_brace):
        spec = dict(student=s_brace or s_taps[0],
                    teacher=t_brace or t_taps[0])
        connectors = [f[0] for f in filled]
        if any(c is not None for c in connectors):
            spec['connector'] = _collapse(connectors)
        spec['loss'] = _collapse([f[1] for f in filled])
        spec.update(copy.deepcopy(template.get('extra') or {}))
        return {name: spec}, notes
    out = {}
    for level, (s_tap, t_tap, f) in enumerate(zip(s_taps, t_taps, filled)):
        spec = dict(student=s_tap, teacher=t_tap)
        if f[0] is not None:
            spec['connector'] = f[0]
        spec['loss'] = f[1]
        spec.update(copy.deepcopy(template.get('extra') or {}))
        out[f'{name}_{level}'] = spec
    return out, notes


@dataclass
class Suggestion:
    """The proposal: pairs (for the report), the ``distill`` dict and the
    rest of the config."""
    method: str
    variant: str
    settings: Settings
    pairs: List[dict]  # name, student/teacher candidates, connector, loss
    distill: Dict[str, dict]
    inherit: List[str]
    notes: List[str]

    def to_dict(self) -> dict:
        return dict(
            method=self.method, variant=self.variant,
            source=self.settings.source,
            pairs=[dict(name=p['name'], student_tap=p['student_tap'],
                        teacher_tap=p['teacher_tap'],
                        student=p['student'].to_dict(),
                        teacher=p['teacher'].to_dict(),
                        connector=p['connector'], loss=p['loss'])
                   for p in self.pairs],
            distill=self.distill, init_student_from_teacher=self.inherit,
            notes=self.notes)


def variant_of(student: Probe, teacher: Probe) -> str:
    if student.kind != teacher.kind:
        raise SuggestError(
            f'The student is a {student.kind} model and the teacher a '
            f'{teacher.kind} model ({student.config} vs {teacher.config}): '
            'distillation needs two models of the same task.')
    if student.kind == 'det':
        return 'det-two' if student.two_stage else 'det-one'
    if student.kind == 'seg':
        same = student.components.get('decode_head') == \
            teacher.components.get('decode_head')
        return 'seg-homo' if same else 'seg-hetero'
    return 'cls'


#: share of the student's values under the inherited paths that must fit
#: for the inheriting strategy to be proposed
MIN_INHERIT_SHARE = 0.5


def inherit_fit(paths: Sequence[str], student: Probe,
                teacher: Probe) -> Tuple[float, List[str]]:
    """How much of the teacher under ``paths`` fits the student. The
    distiller's ``init_student_from_teacher`` (FGD/MGD's inheriting
    strategy) copies the tensors whose names and shapes match, as the FGD
    and MGD code loads the teacher's neck and head non-strictly.

    Returns:
        tuple: (share of the student's values there that fit, names of the
        tensors that do not).
    """
    s_state = student.model.state_dict()
    t_state = teacher.model.state_dict()
    fit, total, misfit = 0, 0, []
    for key, value in s_state.items():
        if not any(key.startswith(p + '.') for p in paths):
            continue
        total += value.numel()
        other = t_state.get(key)
        if other is not None and other.shape == value.shape:
            fit += value.numel()
        else:
            misfit.append(key)
    return (fit / total if total else 0.0), misfit


def suggest(student: Probe, teacher: Probe, method: str) -> Suggestion:
    """Propose the pairs of ``method`` for two probed models.

    Raises:
        SuggestError: The method does not apply, or nothing matches.
    """
    if method not in METHODS:
        raise SuggestError(f'--method must be one of {METHODS}, got '
                           f'{method!r}.')
    variant = variant_of(student, teacher)
    if variant == 'cls':
        if method not in LOGIT_METHODS:
            raise SuggestError(_classifier_advice(method))
        return _classifier_suggestion(student, teacher, method)
    if method in LOGIT_METHODS:
        raise SuggestError(_unsupported(method, variant.split('-')[0]))
    settings = load_settings(method, variant,
                             student.components.get('backbone'),
                             student.profile or None,
                             teacher.profile or None)
    notes = list(settings.notes)
    scale = loss_scale_note(settings, student)
    if scale:
        notes.append(scale)
    distill: Dict[str, dict] = {}
    report = []
    det = variant.startswith('det')
    roles = [spec['role'] for spec in settings.pairs.values()]
    single_role = len(set(roles)) == len(roles)
    for name, template in settings.pairs.items():
        role = template['role']
        by_index = False
        if det:
            by_index = template['loss'].get('type') == \
                'ChannelWiseDivergence'
            pairs, extra = level_pairs(student, teacher, student.two_stage,
                                       by_index)
            if not by_index and not student.two_stage and any(
                    s.by_index or t.by_index for s, t in pairs):
                by_index = True  # module and index taps do not share a brace
            new_name = 'fpn'
        elif role == 'logits':
            try:
                pairs, extra = [logits_pair(student, teacher)], []
            except SuggestError as err:
                if method in ('lad', 'cad'):
                    notes.append(f'the logits term of {method} is left out: '
                                 f'{err}')
                    continue
                raise
            new_name = 'logits'
        else:
            pairs = [last_stage_pair(student, teacher)]
            extra = shallower_stage_notes(student, *pairs[0])
            # not 'backbone': recipes' paramwise custom_keys match
            # parameter names by substring ('backbone': lr_mult=0.1),
            # which the pair's connector parameters would carry
            new_name = 'stage'
        for note in extra:
            if note not in notes:
                notes.append(note)
        name = new_name if single_role else name
        entries, fill_notes = _group(name, pairs, template, by_index)
        resize = None if det else resize_for(*pairs[0])
        if resize:  # one stage or logits pair
            entries = {key: _with_resize(spec, resize)
                       for key, spec in entries.items()}
            fill_notes.append(_resize_note(*pairs[0], resize))
        for note in fill_notes:
            if note not in notes:
                notes.append(note)
        distill.update(entries)
        for level, (s, t) in enumerate(pairs):
            entry_name = name if len(pairs) == 1 else f'{name}_{level}'
            spec = entries.get(entry_name) or entries[name]
            connector = spec.get('connector')
            loss = spec['loss']
            if isinstance(connector, list):
                connector = connector[level]
            if isinstance(loss, list):
                loss = loss[level]
            report.append(dict(name=entry_name, student=s, teacher=t,
                               student_tap=_tap_text(tap_of(s, by_index)),
                               teacher_tap=_tap_text(tap_of(t, by_index)),
                               connector=connector, loss=loss))
    inherit = []
    if settings.inherit:
        share, misfit = inherit_fit(settings.inherit, student, teacher)
        what = f'init_student_from_teacher={settings.inherit}'
        if share >= MIN_INHERIT_SHARE:
            inherit = list(settings.inherit)
            if misfit:
                notes.append(
                    f"{what}: {100 * share:.0f} % of the student's values "
                    "there take the teacher's; the "
                    f'{len(misfit)} tensors of other shapes keep their own '
                    f'initialisation (e.g. {misfit[0]})')
        else:
            notes.append(
                f'the inheriting strategy of the shipped config ({what}) '
                f"is left out: only {100 * share:.0f} % of the student's "
                "values there have the teacher's shapes (e.g. not "
                f'{misfit[0] if misfit else "-"})')
    if method == 'tat':
        notes += _tat_notes(student, distill, report)
    return Suggestion(method, variant, settings, report, distill, inherit,
                      notes)


def _classifier_suggestion(student: Probe, teacher: Probe,
                           method: str) -> Suggestion:
    """The logit pair of two classifiers, with the shipped config's loss
    and its change of the student's own loss."""
    settings = load_settings(method, 'cls',
                             student.components.get('backbone'),
                             student.profile or None,
                             teacher.profile or None)
    s, t = classifier_pair(student, teacher)
    template = next(iter(settings.pairs.values()))
    spec = dict(student=s.path, teacher=t.path)
    if template['connector'] is not None:
        spec['connector'] = copy.deepcopy(template['connector'])
    spec['loss'] = copy.deepcopy(template['loss'])
    spec.update(copy.deepcopy(template['extra']))
    notes = list(settings.notes)
    if settings.student:
        notes.append(f'{settings.source} also sets '
                     f'{_dotted(settings.student, "model.student")} (written '
                     'where the student has that part)')
    report = [dict(name='logits', student=s, teacher=t, student_tap=s.path,
                   teacher_tap=t.path, connector=spec.get('connector'),
                   loss=spec['loss'])]
    return Suggestion(method, 'cls', settings, report, dict(logits=spec),
                      [], notes)


def _fitting(changes: dict, target: dict) -> Tuple[dict, dict]:
    """Split ``changes`` into those whose parent keys exist in ``target``
    (KD's ``head.loss.loss_weight`` needs a ``head.loss`` dict) and the
    rest."""
    fits, misfits = {}, {}
    for key, value in changes.items():
        inner = target.get(key) if isinstance(target, dict) else None
        if isinstance(value, dict) and value:
            if isinstance(inner, dict):
                fit, misfit = _fitting(value, inner)
                if fit:
                    fits[key] = fit
                if misfit:
                    misfits[key] = misfit
            else:
                misfits[key] = value
        elif isinstance(target, dict):
            fits[key] = value
        else:
            misfits[key] = value
    return fits, misfits


def _dotted(changes: dict, prefix: str) -> str:
    """``{'head': {'loss': {'loss_weight': 0.5}}}`` ->
    ``'model.student.head.loss.loss_weight=0.5'`` (``prefix`` first)."""
    parts = []
    for key, value in changes.items():
        if isinstance(value, dict) and value:
            parts.append(_dotted(value, f'{prefix}.{key}'))
        else:
            parts.append(f'{prefix}.{key}={value!r}')
    return ', '.join(parts)


def _tat_notes(student: Probe, distill: dict,
               report: Optional[List[dict]] = None) -> List[str]:
    """TaT's patch grid must divide the student map at training size.

    The map size is the student's training crop (from its config) divided
    by the tapped stage's stride, or, when the config names no crop, the
    probed map.
    """
    notes = []
    crop = (student.profile or {}).get('crop')
    for name, spec in distill.items():
        connector = spec.get('connector') or {}
        grid = connector.get('patch_grid')
        if connector.get('mode') != 'patch_group' or not grid:
            continue
        # with a resize, TaT gets the student map at the teacher's size
        side = 'teacher' if connector.get('resize') else 'student'
        tap = next((p[side] for p in report or [] if p['name'] == name),
                   None)
        stride = tap.stride if tap is not None else None
        if crop and isinstance(stride, int):
            size = (crop[0] // stride, crop[1] // stride)
            where = (f"{size[0]} x {size[1]} for the student's "
                     f'{crop[0]} x {crop[1]} crops at stride {stride}')
            if side == 'teacher':
                where += " (the teacher's, which resize brings it to)"
        elif tap is not None and tap.spatial:
            size = tap.spatial
            h, w = student.input_shape[-2:]
            where = (f'{size[0]} x {size[1]} for the probed {h} x {w} '
                     f'input at stride {_stride_text(tap)}'
                     + (" (the teacher's, which resize brings it to)"
                        if side == 'teacher' else '')
                     + '; the student config names no crop size')
        else:
            size, where = None, 'the student map'
        fits = size is not None and all(
            n % g == 0 for n, g in zip(size, grid))
        verdict = '' if size is None else (
            ': it does' if fits else ': it does NOT, change patch_grid '
            '(and num_groups) or the crop size')
        notes.append(
            f'{name}: TaT splits the student map into a {grid[0]} x '
            f'{grid[1]} patch grid, which must divide the map at the '
            f'training crop size ({where}){verdict}')
    return notes


# --------------------------------------------------------------- writing
class Raw(str):
    """Written into the config as is (``{{_base_.model}}``)."""


def _one_line(value: Any) -> str:
    if isinstance(value, Raw):
        return str(value)
    if isinstance(value, dict):
        if _identifiers(value):
            return 'dict(' + ', '.join(f'{k}={_one_line(v)}'
                                       for k, v in value.items()) + ')'
        return '{' + ', '.join(f'{k!r}: {_one_line(v)}'
                               for k, v in value.items()) + '}'
    if isinstance(value, list):
        return '[' + ', '.join(_one_line(v) for v in value) + ']'
    if isinstance(value, tuple):
        inner = ', '.join(_one_line(v) for v in value)
        return f'({inner},)' if len(value) == 1 else f'({inner})'
    return repr(value)


def _identifiers(value: dict) -> bool:
    return all(isinstance(k, str) and k.isidentifier()
               and not keyword.iskeyword(k) for k in value)


def format_value(value: Any, indent: int = 0, lead: int = 0,
                 width: int = 79) -> str:
    """Python source of a config value in the style of the shipped configs
    (``dict(...)``, one key per line when it does not fit ``width``).

    Args:
        indent (int): Column of the line the value's line starts at.
        lead (int): Characters before the value on its first line.
    """
    one = _one_line(value)
    if indent + lead + len(one) <= width or not isinstance(
            value, (dict, list)) or isinstance(value, Raw) or not value:
        return one
    pad = ' ' * (indent + 4)
    lines = []
    if isinstance(value, dict):
        ident = _identifiers(value)
        for key, item in value.items():
            head = f'{key}=' if ident else f'{key!r}: '
            lines.append(pad + head + format_value(item, indent + 4,
                                                   len(head), width))
        opening, closing = ('dict(', ')') if ident else ('{', '}')
    else:
        for item in value:
            lines.append(pad + format_value(item, indent + 4, 0, width))
        opening, closing = '[', ']'
    return opening + '\n' + ',\n'.join(lines) + closing


def config_path_for(path: str, out: Optional[str], var: bool) -> str:
    """How the written config names another config: scoped paths as they
    are; a local file relative to the written config (``var``: with
    ``{{fileDirname}}``, for the teacher, which is read relative to the
    current directory otherwise) or absolute without ``out``."""
    if '::' in path:
        return path
    path = osp.abspath(path)
    if not out:
        return path
    relative = osp.relpath(path, osp.dirname(osp.abspath(out)))
    return ('{{fileDirname}}/' + relative) if var else relative


def _describe_component(cfg: Optional[dict]) -> str:
    if not cfg:
        return '-'
    kind = cfg.get('type', '?')
    args = {k: v for k, v in cfg.items() if k != 'type'}
    text = ', '.join(f'{k}={v}' for k, v in args.items())
    return f'{kind}({text})'


def _nest(key: str, value: Any) -> Any:
    """``'a.b.c', v`` -> ``{'b': {'c': v}}`` (below the top-level key)."""
    for part in reversed(key.split('.')[1:]):
        value = {part: value}
    return value


def _merge_into(a: dict, b: dict) -> dict:
    """Merge dict ``a`` into a copy of dict ``b``, key by key, as mmengine
    merges a config into its ``_base_`` (without ``_delete_``)."""
    out = copy.deepcopy(b)
    for key, value in a.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge_into(value, out[key])
        else:
            out[key] = copy.deepcopy(value)
    return out


def _plain(value: Any) -> Any:
    """A config value as plain dicts, lists and tuples."""
    if hasattr(value, 'to_dict'):
        value = value.to_dict()
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, tuple):
        return tuple(_plain(v) for v in value)
    return value


def student_overrides(options: Optional[dict], student_cfg) -> Dict[str, Any]:
    """The top-level values a distillation config writes so that its
    ``_base_`` (the student config) gets the student's ``--cfg-options``.

    A key of dicts only (``train_cfg.max_iters``) becomes a nested dict,
    which mmengine merges into the base's value like ``merge_from_dict``;
    a key through a list (``train_pipeline.2.scale``) writes the whole
    overridden top-level value (``student_cfg``, the config with the
    options merged). ``model`` keys are left to :func:`render_config`
    (the distiller's ``student``).

    Args:
        options (dict, optional): The ``--cfg-options`` (``DictAction``).
        student_cfg (Config): The student config with them merged.

    Returns:
        dict: Top-level key -> value to write.
    """
    out: Dict[str, Any] = {}
    whole = set()
    for key, value in (options or {}).items():
        top = key.split('.')[0]
        if top == 'model':
            continue
        parts = key.split('.')[1:]
        through_list = any(p.isdigit() for p in parts)
        if through_list or not parts:
            whole.add(top)
        if top in whole:
            out[top] = _plain(student_cfg.get(top))
            continue
        nested = _plain(_nest(key, value))
        if isinstance(out.get(top), dict) and isinstance(nested, dict):
            out[top] = _merge_into(nested, out[top])
        else:
            out[top] = nested
    return out


def _options_text(options: dict) -> str:
    return ' '.join(f'{k}={v!r}' if isinstance(v, str) else f'{k}={v}'
                    for k, v in options.items())


def render_config(suggestion: Suggestion, student_config: str,
                  teacher_config: str, student_cfg, out: Optional[str],
                  input_shape: Sequence[int],
                  teacher_check: bool = True,
                  student_options: Optional[dict] = None,
                  teacher_options: Optional[dict] = None) -> str:
    """The distillation config's source text.

    Args:
        suggestion (Suggestion): The proposal.
        student_config (str): The student config's path, the ``_base_``.
        teacher_config (str): The teacher config's path.
        student_cfg (Config): The student config as probed (its
            ``student_options`` merged).
        out (str, optional): Where the config is written (paths are
            written relative to it).
        input_shape (tuple): The probed input shape, for the comment.
        teacher_check (bool): Add ``TeacherCheckHook``.
        student_options (dict, optional): The student's ``--cfg-options``:
            written into the config (the distiller's ``student`` is the
            overridden model; other keys are merged into the ``_base_``),
            so that it builds the student that was probed.
        teacher_options (dict, optional): The teacher's overrides:
            written as ``model.teacher.cfg_options``.

    Returns:
        str: Python source of the config.
    """
    student_options = dict(student_options or {})
    teacher_options = dict(teacher_options or {})
    base = config_path_for(student_config, out, var=False)
    teacher_path = config_path_for(teacher_config, out, var=True)
    lines = [
        '# Distillation config written by tools/analysis/suggest_pairs.py',
        f'# --method {suggestion.method}: settings of '
        f'{suggestion.settings.source}',
        f'#   student: {student_config}',
    ] + ([f'#     --cfg-options {_options_text(student_options)}']
         if student_options else []) + [
        f'#   teacher: {teacher_config}',
    ] + ([f'#     --teacher-cfg-options {_options_text(teacher_options)}']
         if teacher_options else []) + [
        ('# The logit layers, probed on a ' if suggestion.variant == 'cls'
         else '# Pairs matched by stride on a ')
        + 'x'.join(str(v) for v in input_shape) + ' dummy batch:',
    ]
    for pair in suggestion.pairs:
        s, t = pair['student'], pair['teacher']
        lines.append(
            f'#   {pair["name"]}: {pair["student_tap"]} ({s.channels} ch, '
            f'stride {_stride_text(s)}) -> {pair["teacher_tap"]} '
            f'({t.channels} ch, stride {_stride_text(t)})')
    for note in suggestion.notes:
        lines.append('# Note: ' + note)
    lines += [
        f'# {FILL_ME}: set model.teacher.checkpoint to the weights trained '
        'with the teacher config',
        '# (a local path or URL) before training.',
        f'_base_ = [{base!r}]',
        '',
    ]
    model_options = [k for k in student_options
                     if k == 'model' or k.startswith('model.')]
    # the student config's model with the --cfg-options on it, in full:
    # {{_base_.model}} is the model before them
    changes, misfit = _fitting(_plain(suggestion.settings.student or {}),
                               _plain(student_cfg.model))
    student = _plain(student_cfg.model) if model_options or changes else \
        Raw('{{_base_.model}}')
    if changes:
        student = _merge_into(changes, student)
    if misfit:
        lines.insert(-4, f'# Note: {_dotted(misfit, "model.student")} of '
                     f'{suggestion.settings.source} is not written: this '
                     "student has no such part; weigh its own loss yourself")
    teacher = dict(
        config=teacher_path,
        checkpoint=f'{FILL_ME}: path or URL of the weights trained with '
        f'{teacher_config}')
    if teacher_options:
        teacher['cfg_options'] = _plain(teacher_options)
    model = dict(
        _delete_=True,
        type='mmdistill.SingleTeacherDistiller',
        student=student,
        teacher=teacher)
    if suggestion.inherit:
        model['init_student_from_teacher'] = suggestion.inherit
    model['distill'] = suggestion.distill
    if model_options:
        lines.append('# student: the model of the student config with '
                     '--cfg-options ' + ', '.join(model_options))
    if changes:
        lines.append('# student: the model of the student config with '
                     f'{_dotted(changes, "model.student")}')
    lines.append('model = ' + format_value(model, 0, len('model = ')))
    top = student_overrides(student_options, student_cfg)
    # written below: the student's, with the --cfg-options on them
    hooks_changed = top.pop('custom_hooks', None) is not None
    optim = suggestion.settings.optim_wrapper
    if 'optim_wrapper' in top:
        mine = top.pop('optim_wrapper')
        optim = _merge_into(mine, optim) if isinstance(mine, dict) and \
            optim else mine
    if top:
        lines += ['', '# --cfg-options of the student, merged into the '
                  'student config (_base_)']
        for key, value in top.items():
            lead = f'{key} = '
            lines.append(lead + format_value(value, 0, len(lead)))
    if optim:
        lines += ['', 'optim_wrapper = ' + format_value(
            optim, 0, len('optim_wrapper = '))]
    student_hooks = [dict(h) for h in (student_cfg.get('custom_hooks') or [])]
    names = {h.get('type') for h in student_hooks}
    hooks = [h for h in suggestion.settings.hooks
             if h.get('type') not in names]
    if teacher_check:
        hooks.append(dict(type='mmdistill.TeacherCheckHook', num_batches=10))
    if hooks:
        # a list replaces its base's: the student's hooks stay in front
        hooks = (student_hooks if hooks_changed else
                 [Raw("*_base_.get('custom_hooks', [])")]) + hooks
    elif hooks_changed:
        hooks = student_hooks
    default_hooks = dict(
        student_checkpoint=dict(type='mmdistill.StudentCheckpointHook'),
        rng_state=dict(type='mmdistill.RNGStateHook'))
    lines += [
        '',
        '# StudentCheckpointHook: student-only checkpoints; RNGStateHook: '
        'exact resume',
        '# (merged into the student\'s default_hooks)',
        'default_hooks = ' + format_value(default_hooks, 0,
                                          len('default_hooks = ')),
    ]
    if hooks or hooks_changed:
        lines += [
            '# TeacherCheckHook: scores the teacher on 10 validation '
            'batches before the',
            '# first iteration and stops when it is at chance level (a '
            'wrong checkpoint).' if teacher_check else
            '# (TeacherCheckHook left out: --no-teacher-check)',
            'custom_hooks = ' + format_value(hooks, 0,
                                             len('custom_hooks = ')),
        ]
    elif not teacher_check:
        lines.append('# (TeacherCheckHook left out: --no-teacher-check)')
    lines.append('')
    return '\n'.join(lines)


def _numbers(values: torch.Tensor) -> str:
    """``[123.675, 116.28, 103.53]``: float32 values as a config writes
    them (6 significant digits), not ``123.67500305175781``."""
    return '[' + ', '.join(f'{v:g}' for v in values.flatten().tolist()) \
        + ']'


def preprocessing_notes(student: Probe, teacher: Probe) -> List[str]:
    """Where the two data preprocessors disagree (the student's feeds the
    teacher)."""
    from mmdistill.distillers.teacher import swaps_channels
    a = student.model.data_preprocessor
    b = teacher.model.data_preprocessor
    notes = []
    order = [swaps_channels(p) for p in (a, b)]
    if None not in order and order[0] != order[1]:
        notes.append(f'BGR->RGB: student {order[0]}, teacher {order[1]}')
    for attr in ('mean', 'std'):
        x, y = getattr(a, attr, None), getattr(b, attr, None)
        if isinstance(x, torch.Tensor) and isinstance(y, torch.Tensor) and (
                x.shape != y.shape or not torch.allclose(x, y)):
            notes.append(f'{attr}: student {_numbers(x)}, teacher '
                         f'{_numbers(y)}')
    return notes


# ---------------------------------------------------------------- report
_ROLE_NAMES = {STAGE: 'backbone stage', LEVEL: 'neck level (FPN)',
               HEAD: 'head output'}


def _stride_text(c: Candidate) -> str:
    ints = [v for v in c.call_strides if isinstance(v, int)]
    if len(ints) > 1 and len(ints) == len(c.call_strides):
        return f'{min(ints)}-{max(ints)}'
    if c.stride is None:
        return '-'
    if isinstance(c.stride, tuple):
        return f'{c.stride[0]:g}x{c.stride[1]:g}'
    return str(c.stride)


def format_candidates(probe: Probe, title: str) -> str:
    """The candidate taps of one model as a table."""
    rows = []
    for c in probe.candidates:
        tap = c.describe_tap()
        if c.index is not None and not c.by_index and c.role != HEAD:
            tap += f'  = {c.path.split(".")[0]}[{c.index}]'
        if c.inplace:
            tap += '  (changed in place later: clone=True)'
        what = _ROLE_NAMES[c.role]
        if c.role == LEVEL and not c.spatial:  # a classifier's pooling neck
            what = 'neck output'
        elif c.role == STAGE and len(c.shape) == 2:  # pooled, class token
            what = 'backbone output, a vector per image'
        what += f' ({c.note})' if c.note else ''
        rows.append((tap, 'x'.join(str(v) for v in c.shape),
                     _stride_text(c), str(c.channels), what))
    width = max([len(r[0]) for r in rows] + [3])
    lines = [f'{title}: {probe.config}',
             f'  {probe.model_type} ({", ".join(probe.components.values())})'
             f', dummy input '
             + 'x'.join(str(v) for v in probe.input_shape)
             + ', random weights',
             f'  {"tap":{width}}  {"output shape":>16}  {"stride":>6}  '
             f'{"channels":>8}  what']
    for tap, shape, stride, channels, role in rows:
        lines.append(f'  {tap:{width}}  {shape:>16}  {stride:>6}  '
                     f'{channels:>8}  {role}')
    for comp in probe.unlisted:
        lines.append(f'  ({comp}: no head output listed: no module '
                     'computes what it returns, nor a tensor of that shape; '
                     'tap its layers by module path)')
    return '\n'.join(lines)


def format_suggestion(suggestion: Suggestion) -> str:
    lines = [f'Proposed pairs for --method {suggestion.method} (settings of '
             f'{suggestion.settings.source}):']
    for pair in suggestion.pairs:
        s, t = pair['student'], pair['teacher']
        parts = []
        if pair['connector']:
            parts.append(_describe_component(pair['connector']))
        parts.append(_describe_component(pair['loss']))
        lines.append(
            f'  {pair["name"]}: {pair["student_tap"]} ({s.channels} ch, '
            f'stride {_stride_text(s)}) -> {pair["teacher_tap"]} '
            f'({t.channels} ch, stride {_stride_text(t)})')
        lines.append('      ' + ' + '.join(parts))
    if suggestion.inherit:
        lines.append('  init_student_from_teacher='
                     f'{suggestion.inherit} (the student starts from the '
                     "teacher's weights there)")
    if suggestion.settings.optim_wrapper:
        lines.append(f'  optim_wrapper={suggestion.settings.optim_wrapper}')
    for note in suggestion.notes:
        lines.append(f'  note: {note}')
    return '\n'.join(lines)
