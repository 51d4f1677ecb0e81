"""One frozen teacher, one student, any number of distillation pairs."""
import copy
import inspect
import warnings
from collections import OrderedDict
from typing import Dict, List, Optional, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmengine.logging import print_log
from mmengine.model import BaseModel
from mmengine.registry import MODELS as ROOT_MODELS
from mmengine.registry import DefaultScope

from mmdistill.registry import MODELS
from mmdistill.utils.checkpoint import load_weights
from .guard import DistillGuard
from .taps import (FeatureRecorder, Tap, TapPathError, expand_braces,
                   parse_tap)
from .teacher import (TeacherRunner, autocast_enabled, build_teacher,
                      swaps_channels)

LOSS_PREFIX = 'loss_distill_'


def build_component(cfg: dict) -> nn.Module:
    """Build a connector or loss in the ``mmdistill`` scope (the runner's
    default scope is the student's, e.g. ``mmdet``); a scoped type such as
    ``'mmdet.SmoothL1Loss'`` still resolves through its own registry."""
    with DefaultScope.overwrite_default_scope('mmdistill'):
        return MODELS.build(cfg)


class _Pair:
    """A resolved distillation pair; ``group`` and ``level`` locate its
    config (``distill.<group>``; ``level`` of a ``{0-4}`` expansion)."""

    def __init__(self, name: str, student: Tap, teacher: Tap,
                 group: Optional[str] = None, level: Optional[int] = None,
                 listed: Sequence[str] = ()) -> None:
        self.name = name
        self.student = student
        self.teacher = teacher
        self.group = name if group is None else group
        self.level = level
        self.listed = set(listed)  # 'connector'/'loss' given as lists

    def config_path(self, what: str) -> str:
        """``distill.fpn.connector``, or ``distill.fpn.connector[2]`` when
        the config gives one per level."""
        path = f'distill.{self.group}.{what}'
        if what in self.listed and self.level is not None:
            path += f'[{self.level}]'
        return path

    def __str__(self) -> str:
        return (f'pair {self.name!r} (student tap {self.student}, teacher '
                f'tap {self.teacher})')


def _per_level(value, count: int, what: str, pair: str):
    """One config per expanded level: a list is indexed, anything else is
    copied to every level."""
    if isinstance(value, (list, tuple)):
        if len(value) != count:
            raise ValueError(
                f'distill.{pair}.{what} is a list of {len(value)}, but the '
                f'taps expand to {count} levels.')
        return [copy.deepcopy(v) for v in value]
    return [copy.deepcopy(value) for _ in range(count)]


@torch.no_grad()
def feature_stats_tensors(raw: torch.Tensor, student: torch.Tensor,
                          teacher: torch.Tensor,
                          loss: torch.Tensor) -> Dict[str, torch.Tensor]:
    """:func:`feature_stats` as 0-d float32 tensors, computed on the
    features' device without reading anything back to the host."""

    def std(x):
        if x.numel() > 1:
            return x.float().std()
        return x.new_zeros((), dtype=torch.float32)

    out = dict(loss=loss.detach().float().reshape(()),
               student_mean=raw.float().mean(),
               student_std=std(raw),
               teacher_mean=teacher.float().mean(),
               teacher_std=std(teacher))
    for tag, x in (('before', raw), ('after', student)):
        if x.shape == teacher.shape:
            x, t = x.float(), teacher.float()
            out[f'mse_{tag}_connector'] = (x - t).pow(2).mean()
            out[f'cos_{tag}_connector'] = F.cosine_similarity(
                x.reshape(x.shape[0], -1), t.reshape(t.shape[0], -1),
                dim=1).mean()
    return out


def feature_stats(raw: torch.Tensor, student: torch.Tensor,
                  teacher: torch.Tensor,
                  loss: torch.Tensor) -> Dict[str, float]:
    """Statistics of one distillation pair, for :class:`FeatureStatsHook`.

    ``raw`` is the student tap before the connector, ``student`` after it.
    Distances are mean squared differences per element (paper 001, Table 6
    compares the L2 distance before and after the connector); ``cos`` is
    the cosine similarity of each sample's flattened features, averaged.
    Entries that need equal shapes are left out when the shapes differ.
    """
    values = feature_stats_tensors(raw, student, teacher, loss)
    floats = torch.stack(list(values.values())).tolist()
    return dict(zip(values, floats))


def _shape(x) -> str:
    return str(tuple(x.shape)) if isinstance(x, torch.Tensor) else \
        type(x).__name__


def _channels(x: torch.Tensor) -> Optional[int]:
    """The channel count of a feature: dim 1 of (N, C, ...), the last dim
    of (N, L, C) tokens."""
    if not isinstance(x, torch.Tensor) or x.dim() < 2:
        return None
    return int(x.shape[-1] if x.dim() == 3 else x.shape[1])


def tap_channels(model: nn.Module, tap: Tap) -> Optional[int]:
    """The channel count a tap gives, when the tapped module says it
    without running (a conv, linear or norm layer, an mmcv ConvModule);
    None otherwise."""
    if tap.index is not None and tap.source == 'output':
        return None
    module = dict(model.named_modules()).get(tap.path)
    if module is None:
        return None
    if tap.source == 'input':
        if tap.index not in (None, 0):
            return None
        if isinstance(module, nn.modules.conv._ConvNd):
            return module.in_channels
        if isinstance(module, nn.Linear):
            return module.in_features
        if isinstance(module, nn.modules.batchnorm._NormBase):
            return module.num_features
        return None
    if isinstance(module, nn.modules.conv._ConvNd):
        return module.out_channels
    if isinstance(module, nn.Linear):
        return module.out_features
    if isinstance(module, nn.modules.batchnorm._NormBase):
        return module.num_features
    if isinstance(module, nn.GroupNorm):
        return module.num_channels
    try:
        from mmcv.cnn import ConvModule
    except ImportError:  # pragma: no cover
        return None
    if isinstance(module, ConvModule):
        return module.conv.out_channels
    return None


_WRAPPED = (ValueError, TypeError, RuntimeError, IndexError, AssertionError)


@MODELS.register_module()
class SingleTeacherDistiller(BaseModel):
    """Trains a student from a frozen teacher through tapped features.

    The student's own losses are returned unchanged, plus one
    ``loss_distill_<pair>`` per distillation pair; ``predict``/``tensor``
    modes (validation, test) run the student alone.

    The teacher is built from its own config in its own registry scope, its
    weights are loaded on CPU, and it is kept frozen: eval mode through every
    ``train()`` call, no gradients, outside ``parameters()`` (so neither the
    optimizer nor DDP nor runner checkpoints see it; it is reloaded from its
    checkpoint), and it runs only as far as its deepest tap.

    The distillation forward reads nothing back to the host (no
    synchronisation of a GPU); whether training works is checked once per
    iteration after the update by ``guard`` (see :class:`DistillGuard`).

    Args:
        student (dict): The student model config, normally
            ``{{_base_.model}}`` of the inherited mmdet/mmseg/mmpretrain
            config. Its data preprocessor serves both models.
        teacher (dict): ``config`` (local path or ``mmdet::``/``mmseg::``/
            ``mmpretrain::`` path), ``checkpoint`` (path or URL), optional
            ``strict`` (default True: a checkpoint that does not fit stops
            with the list of keys), ``cfg_options`` (overrides merged into
            the teacher config), ``dtype`` (``'bfloat16'``/``'float16'``:
            the teacher runs under autocast in that dtype whatever the
            student trains in; ``'float32'``: never under autocast) and
            ``channels_last`` (teacher weights and input in
            ``torch.channels_last``). With ``dtype`` or ``channels_last``
            the teacher's features reach connectors and losses as
            contiguous float32. See :class:`TeacherRunner`.
        distill (dict): Pair name -> dict with ``student`` and ``teacher``
            taps (see :mod:`mmdistill.distillers.taps`; a ``{0-4}`` group
            expands to pairs ``<name>_0`` ... ``<name>_4``), an optional
            ``connector`` config (student side; a list gives one config per
            expanded level) and a ``loss`` config (likewise).
        student_checkpoint (str, optional): Start the student from these
            weights (loaded in ``init_weights``, so a resumed run overrides
            them).
        init_student_from_teacher (list[str], optional): Submodule paths
            (e.g. ``['neck', 'bbox_head']``) whose teacher weights are copied
            into the student where names and shapes match: the "inheriting
            strategy" of FGD/MGD.
        guard (dict, optional): When training stops because it would not
            train: ``dict(action='stop', max_loss_ratio=1e4, check_iters=10,
            amp_patience=20)`` (the defaults). ``action='stop'`` raises
            :class:`DistillGuardError` naming the pair and the fix when a
            distillation loss, the student's own loss or the logged gradient
            norm (``optim_wrapper.clip_grad`` set) is not finite, or when a
            distillation term exceeds ``max_loss_ratio`` times the student's
            own losses in the first ``check_iters`` iterations;
            ``'warn'`` logs it once instead; ``'off'`` checks nothing.
        data_preprocessor (dict, optional): Used only when the student
            config has no data preprocessor (mmengine's Runner passes the
            config's top-level ``data_preprocessor`` here). The student's own
            always wins.
        init_cfg (dict, optional): mmengine init config.
    """

    TEACHER_KEYS = ('config', 'checkpoint', 'strict', 'cfg_options', 'dtype',
                    'channels_last')

    def __init__(self,
                 student: dict,
                 teacher: dict,
                 distill: Dict[str, dict],
                 student_checkpoint: Optional[str] = None,
                 init_student_from_teacher: Optional[List[str]] = None,
                 guard: Optional[dict] = None,
                 data_preprocessor: Optional[dict] = None,
                 init_cfg: Optional[dict] = None) -> None:
        super().__init__(init_cfg=init_cfg)
        if not isinstance(student, dict) or 'type' not in student:
            raise TypeError(
                'student must be a model config dict, e.g. '
                'student={{_base_.model}} in a config inheriting the '
                "student's mmdet/mmseg config.")
        # checked first: a typo here should not wait for the models' build
        self.guard = DistillGuard.build(guard)
        teacher = dict(teacher)
        unknown = set(teacher) - set(self.TEACHER_KEYS)
        if unknown or 'config' not in teacher:
            raise ValueError(
                f'teacher takes {", ".join(self.TEACHER_KEYS)} (config '
                f'required); got {sorted(teacher)}.')
        student = copy.deepcopy(student)
        if student.get('data_preprocessor') is None and data_preprocessor:
            student['data_preprocessor'] = data_preprocessor
        self.student = ROOT_MODELS.build(student)
        self.data_preprocessor = self.student.data_preprocessor

        # Kept out of the module tree on purpose: see the class docstring.
        self.__dict__['teacher'] = build_teacher(
            teacher['config'], teacher.get('checkpoint'),
            teacher.get('strict', True), teacher.get('cfg_options'))
        self._check_preprocessors()

        self.pairs: Dict[str, _Pair] = OrderedDict()
        # config name -> its pairs (a {0-4} group expands to several)
        self.pair_groups: Dict[str, List[str]] = OrderedDict()
        self.connectors = nn.ModuleDict()
        self.distill_losses = nn.ModuleDict()
        self._loss_takes_samples: Dict[str, bool] = {}
        self._warned_no_grad: set = set()
        # Set by hooks: a factor per pair (DistillLossScheduleHook; missing
        # pairs count 1) and whether the next loss() records feature
        # statistics (FeatureStatsHook).
        self.loss_scales: Dict[str, float] = {}
        self.collect_stats = False
        self._feature_stats: Dict[str, Dict[str, float]] = {}
        self._pending_stats: Dict[str, Dict[str, torch.Tensor]] = {}
        self._amp = False  # whether the last loss() ran under autocast
        if not distill:
            raise ValueError('distill is empty: name at least one pair.')
        for name, spec in distill.items():
            self._add_pairs(name, spec)

        self.student_recorder = FeatureRecorder(
            self.student,
            {n: p.student for n, p in self.pairs.items()}, 'student')
        self.teacher_recorder = FeatureRecorder(
            self.teacher,
            {n: p.teacher for n, p in self.pairs.items()}, 'teacher')
        self._check_channels()
        self.teacher_runner = TeacherRunner(
            self.teacher, self.teacher_recorder, teacher.get('dtype'),
            teacher.get('channels_last', False))
        self.student_checkpoint = student_checkpoint
        self.init_student_from_teacher = list(init_student_from_teacher or [])
        modules = dict(self.student.named_modules())
        teacher_modules = dict(self.teacher.named_modules())
        for path in self.init_student_from_teacher:
            if path not in modules or path not in teacher_modules:
                raise TapPathError(
                    f'init_student_from_teacher: {path!r} must be a module '
                    'of both the student and the teacher.')

    # ------------------------------------------------------------------ build
    def _add_pairs(self, name: str, spec: dict) -> None:
        if not isinstance(spec, dict) or not {'student', 'teacher', 'loss'
                                              } <= set(spec):
            raise ValueError(
                f'distill.{name} needs student, teacher and loss (and '
                'optionally connector), e.g. dict(student="neck[0]", '
                'teacher="neck[0]", loss=dict(type="L2Loss")).')
        unknown = set(spec) - {'student', 'teacher', 'connector', 'loss'}
        if unknown:
            raise ValueError(
                f'distill.{name}: unknown keys {sorted(unknown)}.')
        students = expand_braces(spec['student'])
        teachers = expand_braces(spec['teacher'])
        count = max(len(students), len(teachers))
        if len(students) == 1:
            students = students * count
        if len(teachers) == 1:
            teachers = teachers * count
        if len(students) != len(teachers):
            raise ValueError(
                f'distill.{name}: the student taps expand to {len(students)} '
                f'levels and the teacher taps to {len(teachers)}.')
        connectors = _per_level(spec.get('connector'), count, 'connector',
                                name)
        losses = _per_level(spec['loss'], count, 'loss', name)
        listed = [what for what in ('connector', 'loss')
                  if isinstance(spec.get(what), (list, tuple))]
        self.pair_groups[name] = []
        for level in range(count):
            pair = name if count == 1 else f'{name}_{level}'
            self.pair_groups[name].append(pair)
            if pair in self.pairs:
                raise ValueError(f'Two distillation pairs are named {pair!r}.')
            self.pairs[pair] = _Pair(pair, parse_tap(students[level]),
                                     parse_tap(teachers[level]), name,
                                     None if count == 1 else level, listed)
            if connectors[level] is not None:
                self.connectors[pair] = build_component(connectors[level])
            loss = build_component(losses[level])
            self.distill_losses[pair] = loss
            params = inspect.signature(loss.forward).parameters
            self._loss_takes_samples[pair] = 'data_samples' in params

    def _check_channels(self) -> None:
        """Stop at build time when a connector's ``in_channels`` or
        ``out_channels`` contradicts what its taps give, where the tapped
        module says so without running (a conv, linear or norm layer)."""
        problems = []
        for name, connector in self.connectors.items():
            pair = self.pairs[name]
            path = pair.config_path('connector')
            for attr, model, tap, side in (
                    ('in_channels', self.student, pair.student, 'student'),
                    ('out_channels', self.teacher, pair.teacher, 'teacher')):
                want = getattr(connector, attr, None)
                have = tap_channels(model, tap)
                if isinstance(want, int) and have is not None \
                        and want != have:
                    problems.append(
                        f'  {pair}: {type(connector).__name__} has '
                        f'{attr}={want}, but the {side} tap {tap} gives '
                        f'{have} channels: set {path}.{attr}={have}.')
        if problems:
            raise ValueError('Connector channels do not fit their taps:\n' +
                             '\n'.join(problems))

    def _check_preprocessors(self) -> None:
        student = self.data_preprocessor
        teacher = self.teacher.data_preprocessor
        order = [swaps_channels(p) for p in (student, teacher)]
        if None not in order and order[0] != order[1]:
            warnings.warn(
                'The teacher config converts BGR to RGB '
                f'({order[1]}) unlike the student ({order[0]}); the '
                'student\'s data preprocessor serves both models, so the '
                'teacher sees its channels swapped.')
        for attr in ('mean', 'std'):
            a, b = getattr(student, attr, None), getattr(teacher, attr, None)
            if (isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor)
                    and (a.shape != b.shape or not torch.allclose(a, b))):
                warnings.warn(
                    f'The teacher config normalises with {attr} '
                    f'{b.flatten().tolist()} but the student with '
                    f'{a.flatten().tolist()}; the student\'s data '
                    'preprocessor serves both models, so the teacher sees '
                    'inputs normalised unlike in its own training.')

    # -------------------------------------------------------- module plumbing
    def train(self, mode: bool = True) -> 'SingleTeacherDistiller':
        super().train(mode)
        self.teacher.train(False)
        return self

    def _apply(self, fn, *args, **kwargs):
        super()._apply(fn, *args, **kwargs)
        self.teacher._apply(fn, *args, **kwargs)
        return self

    def init_weights(self) -> None:
        super().init_weights()
        if self.student_checkpoint:
            load_weights(self.student, self.student_checkpoint, strict=False,
                         owner='student')
        if self.init_student_from_teacher:
            self.inherit_from_teacher(self.init_student_from_teacher)

    @torch.no_grad()
    def inherit_from_teacher(self, paths: Sequence[str]) -> Dict[str, int]:
        """Copy teacher weights of the submodules ``paths`` into the student
        where names and shapes match; returns copied/skipped counts."""
        student_state = self.student.state_dict()
        copied, skipped = 0, []
        for key, value in self.teacher.state_dict().items():
            if not any(key == p or key.startswith(p + '.') for p in paths):
                continue
            target = student_state.get(key)
            if target is not None and target.shape == value.shape:
                target.copy_(value)
                copied += 1
            else:
                skipped.append(key)
        print_log(
            f'init_student_from_teacher {list(paths)}: copied {copied} '
            f'tensors, skipped {len(skipped)} (absent or of another shape)'
            + (f': {skipped[:10]}' if skipped else ''), logger='current')
        return dict(copied=copied, skipped=len(skipped))

    # ---------------------------------------------------------------- forward
    def forward(self,
                inputs: torch.Tensor,
                data_samples: Optional[list] = None,
                mode: str = 'tensor'):
        if mode == 'loss':
            return self.loss(inputs, data_samples)
        return self.student(inputs, data_samples, mode=mode)

    def teacher_features(self, inputs: torch.Tensor,
                         data_samples: Optional[list] = None) -> dict:
        """Run the teacher up to its deepest tap and return its features
        (in its ``dtype``/``channels_last`` setting)."""
        return self.teacher_runner.features(inputs, data_samples)

    def loss(self, inputs: torch.Tensor,
             data_samples: Optional[list] = None) -> Dict[str, torch.Tensor]:
        """The student's losses plus ``loss_distill_<pair>`` per pair.

        Nothing here reads a value back to the host: the checks of the
        values run after the update (:meth:`train_step`)."""
        if self.training and self.guard.pending:
            # under DDP mmengine's wrapper calls parse_losses but not our
            # train_step: check the last iteration now (its values reached
            # the host when mmengine logged them; nothing waits here)
            self._guard_check(None, wait=False, inputs=inputs,
                              data_samples=data_samples,
                              when=' (checked at the next iteration)')
        self._amp = autocast_enabled(inputs.device.type)
        if self.training and not any(
                self.loss_scales.get(name, 1.0) for name in self.pairs):
            # Every distillation loss is scheduled off: the student trains
            # alone and the teacher does not run.
            losses = self.student(inputs, data_samples, mode='loss')
            losses.update(self._zero_losses())
            return losses
        with self.student_recorder.record() as student_features:
            losses = self.student(inputs, data_samples, mode='loss')
        self.student_recorder.check_complete(student_features, 'student loss')
        teacher_features = self.teacher_features(inputs, data_samples)
        stats = self.collect_stats
        self.collect_stats = False
        for name in self.pairs:
            student = student_features[name]
            teacher = teacher_features[name].detach()
            raw = student
            if (self.training and not student.requires_grad
                    and name not in self._warned_no_grad):
                self._warned_no_grad.add(name)
                warnings.warn(
                    f'The student tap of pair {name!r} '
                    f'({self.pairs[name].student}) carries no gradient (a '
                    'frozen stage, e.g. frozen_stages, or no_grad code): its '
                    'loss cannot train the student. Tap a trainable layer.')
            if name in self.connectors:
                connector = self.connectors[name]
                try:
                    student = connector(student, teacher)
                    # e.g. TaT in anchor mode compares with the pooled
                    # teacher
                    target = getattr(connector, 'teacher_target', None)
                    if target is not None:
                        teacher = target(teacher)
                except _WRAPPED as err:
                    if type(err) not in _WRAPPED:  # e.g. out of memory
                        raise
                    raise self._pair_error(name, 'connector', err, raw,
                                           teacher)
            loss = self.distill_losses[name]
            key = LOSS_PREFIX + name
            if key in losses:
                raise KeyError(f'The student already returns a loss {key!r}.')
            try:
                if self._loss_takes_samples[name]:
                    value = loss(student, teacher, data_samples=data_samples)
                else:
                    value = loss(student, teacher)
            except _WRAPPED as err:
                if type(err) not in _WRAPPED:
                    raise
                raise self._pair_error(name, 'loss', err, raw, teacher,
                                       student)
            if stats:
                self._pending_stats[name] = feature_stats_tensors(
                    raw, student, teacher, value)
            scale = self.loss_scales.get(name, 1.0)
            losses[key] = value if scale == 1.0 else value * scale
        return losses

    @property
    def feature_stats(self) -> Dict[str, Dict[str, float]]:
        """Pair -> statistics of the last loss() with ``collect_stats`` (for
        :class:`FeatureStatsHook`). They are computed as tensors in the
        forward and read back here, when asked, in one transfer."""
        if self._pending_stats:
            pending, self._pending_stats = self._pending_stats, {}
            flat = [v for values in pending.values() for v in values.values()]
            floats = iter(torch.stack(flat).tolist())
            for name, values in pending.items():
                self._feature_stats[name] = {k: next(floats) for k in values}
        return self._feature_stats

    def _zero_losses(self) -> Dict[str, torch.Tensor]:
        """``loss_distill_<pair>`` = 0, connected to every connector and
        loss parameter so that DDP (without find_unused_parameters) still
        sees a gradient, of zero, for each of them."""
        out = {}
        for name in self.pairs:
            params = []
            for modules in (self.connectors, self.distill_losses):
                if name in modules:
                    params += list(modules[name].parameters())
            zero = sum(((p * 0).sum() for p in params if p.requires_grad),
                       torch.zeros((), device=self._device()))
            out[LOSS_PREFIX + name] = zero
        return out

    def _device(self) -> torch.device:
        return next(self.student.parameters()).device

    # --------------------------------------------------- messages and guard
    def _pair_error(self, name: str, stage: str, err: Exception,
                    raw: torch.Tensor, teacher: torch.Tensor,
                    student: Optional[torch.Tensor] = None) -> Exception:
        """``err``'s type with a message naming the pair, both taps, their
        shapes and what to change; chained to ``err`` unless the message
        replaces its advice."""
        pair = self.pairs[name]
        connector = self.connectors[name] if name in self.connectors else None
        module = connector if stage == 'connector' else \
            self.distill_losses[name]
        what = type(module).__name__
        sizes = [f'{a}={getattr(module, a)}' for a in
                 ('in_channels', 'out_channels', 'student_channels')
                 if isinstance(getattr(module, a, None), int)]
        if sizes:
            what += f' ({", ".join(sizes)})'
        text, advice = str(err), []
        if stage == 'connector':
            want = getattr(connector, 'in_channels', None)
            have = _channels(raw)
            if isinstance(want, int) and have is not None and want != have:
                advice.append(
                    f'The student tap has {have} channels: set '
                    f'{pair.config_path("connector")}.in_channels={have}.')
        else:
            advice = self._shape_advice(pair, connector, student, teacher)
        marker = f'{_shape(teacher)}: '
        replaced = stage == 'loss' and bool(advice) and marker in text
        if replaced:
            # the loss's own fix ("add a connector") is replaced by what
            # fits this pair
            text = text[:text.rindex(marker) + len(marker) - 2]
        lines = [
            f'Distillation {pair}: the {stage} {what} failed on the student '
            f'tap of shape {_shape(raw)}'
            + (f' ({_shape(student)} after the connector)'
               if student is not None and student is not raw else '')
            + f' and the teacher tap of shape {_shape(teacher)}: '
            + text.rstrip('.') + '.'
        ] + advice
        exc = type(err)('\n'.join(lines))
        exc.__cause__ = None if replaced else err
        exc.__suppress_context__ = True
        return exc

    def _shape_advice(self, pair: _Pair, connector, student,
                      teacher) -> List[str]:
        """What to change when the loss got features it cannot compare."""
        if not all(isinstance(x, torch.Tensor) for x in (student, teacher)):
            return []
        if student.dim() != teacher.dim() or student.dim() < 3:
            return []
        name = type(connector).__name__ if connector is not None else None
        out = []
        s_size, t_size = tuple(student.shape[2:]), tuple(teacher.shape[2:])
        if student.dim() == 4 and s_size != t_size:
            takes_resize = connector is not None and 'resize' in \
                inspect.signature(type(connector).__init__).parameters
            if takes_resize:
                change = (f'set {pair.config_path("connector")}.resize so '
                          f'that {name} resizes to the teacher')
            elif connector is not None:
                change = (f'the connector {name} keeps the student\'s size '
                          '(another connector would not change that)')
            else:
                change = 'a channel connector would not change that'
            out.append(
                f'The spatial sizes differ (student {s_size}, teacher '
                f'{t_size}): {change}; tap layers with the same output size '
                f'instead: change the student tap {pair.student.path!r} or '
                f'the teacher tap {pair.teacher.path!r} (e.g. the same '
                'stage or FPN level on both sides).')
        s_channels, t_channels = _channels(student), _channels(teacher)
        if s_channels != t_channels:
            if connector is None:
                out.append(
                    f'The channels differ (student {s_channels}, teacher '
                    f'{t_channels}): add a connector, e.g. '
                    f"{pair.config_path('connector')}=dict(type="
                    f"'MLPConnector', in_channels={s_channels}, "
                    f'out_channels={t_channels}).')
            elif isinstance(getattr(connector, 'out_channels', None), int):
                out.append(
                    f'The connector gives {s_channels} channels, the teacher '
                    f'{t_channels}: set {pair.config_path("connector")}'
                    f'.out_channels={t_channels}.')
        return out

    def parse_losses(self, losses: Dict[str, torch.Tensor]):
        """mmengine's sum of the losses; also hands this iteration's values
        to the guard (no synchronisation). Called by ``train_step`` and by
        mmengine's DDP wrapper alike."""
        if 'loss' in losses:
            # mmpretrain's heads call their loss 'loss', the key mmengine
            # logs the total under: logged as 'loss_student' so that the
            # logged 'loss' stays the total (the optimised sum is the same)
            losses = OrderedDict(('loss_student' if k == 'loss' else k, v)
                                 for k, v in losses.items())
        parsed, log_vars = super().parse_losses(losses)
        if self.training:
            keys = [LOSS_PREFIX + name for name in self.pairs]
            self.guard.record(log_vars, keys, self._amp)
        return parsed, log_vars

    def train_step(self, data, optim_wrapper) -> Dict[str, torch.Tensor]:
        """mmengine's train step, then the guard's check of this iteration
        (one transfer of the logged values, which mmengine reads right
        after anyway)."""
        log_vars = super().train_step(data, optim_wrapper)
        if self.guard.pending:
            self._guard_check(getattr(optim_wrapper, 'message_hub', None),
                              wait=True, data=data)
        return log_vars

    def _guard_check(self, message_hub, wait: bool, data=None, inputs=None,
                     data_samples=None, when: str = '') -> None:

        def diagnose(names: List[str], task_finite: bool) -> Dict[str, str]:
            if inputs is not None:
                batch = dict(inputs=inputs, data_samples=data_samples)
            elif data is not None:
                batch = self.data_preprocessor(data, True)
            else:
                return {}
            return self.diagnose_non_finite(batch['inputs'],
                                            batch['data_samples'], names,
                                            task_finite)

        self.guard.check(message_hub, wait=wait, describe=self._weight_fix,
                         diagnose=diagnose, when=when)

    def _weight_fix(self, name: str) -> str:
        """How to lower a pair's weight, naming its config key."""
        loss = self.distill_losses[name]
        path = self.pairs[name].config_path('loss')
        weights = [(a, getattr(loss, a)) for a in
                   ('loss_weight', 'alpha', 'beta', 'gamma', 'lambda_')
                   if isinstance(getattr(loss, a, None), (int, float))]
        if not weights:
            return f'Lower the weight of {path} ({type(loss).__name__})'
        if weights[0][0] == 'loss_weight':
            return f'Lower {path}.loss_weight (now {weights[0][1]:g})'
        now = ', '.join(f'{a}={v:g}' for a, v in weights)
        return f'Lower the weights of {path} (now {now})'

    @torch.no_grad()
    def diagnose_non_finite(self, inputs: torch.Tensor, data_samples,
                            names: List[str],
                            task_finite: bool = True) -> Dict[str, str]:
        """Which side made each pair's loss non-finite: the teacher's
        feature (rerun on this batch: the teacher is frozen, so it gives
        what it gave), else the student when its own losses were not
        finite in that iteration, else the loss itself overflowed.
        Synchronises; only called when a problem was found."""
        teacher = self.teacher_features(inputs, data_samples)
        out = {}
        for name in names:
            if not bool(torch.isfinite(teacher[name]).all()):
                out[name] = (
                    '(teacher feature not finite) Check that the teacher '
                    "checkpoint fits its config and that the student's "
                    'normalisation suits it; under float16 (AMP or '
                    'teacher.dtype) an overflow: use bfloat16 or float32.')
            elif not task_finite:
                out[name] = (
                    '(student side: its own losses are not finite either) '
                    'The student diverged: lower the learning rate or this '
                    'loss weight, or add gradient clipping '
                    '(optim_wrapper.clip_grad).')
            else:
                fix = self._weight_fix(name)
                out[name] = (
                    "(features finite: the teacher's on a rerun, the "
                    "student's as its own losses were finite) The loss "
                    f'overflowed: {fix[0].lower()}{fix[1:]} or check its '
                    'temperature.')
        return out
