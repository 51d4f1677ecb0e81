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
from .teacher import build_teacher, swaps_channels
from .taps import (FeatureRecorder, StopForward, Tap, TapPathError,
                   expand_braces, parse_tap)

LOSS_PREFIX = 'loss_distill_'


def build_component(cfg: dict) -> nn.Module:
    """Build a connector or loss in the ``mmdistill`` scope (the runner's
    default scope is the student's, e.g. ``mmdet``); a scoped type such as
    ``'mmdet.SmoothL1Loss'`` still resolves through its own registry."""
    with DefaultScope.overwrite_default_scope('mmdistill'):
        return MODELS.build(cfg)


class _Pair:
    """A resolved distillation pair."""

    def __init__(self, name: str, student: Tap, teacher: Tap) -> None:
        self.name = name
        self.student = student
        self.teacher = teacher


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
    out = dict(loss=float(loss.detach().float()),
               student_mean=float(raw.float().mean()),
               student_std=float(raw.float().std()) if raw.numel() > 1 else 0.,
               teacher_mean=float(teacher.float().mean()),
               teacher_std=(float(teacher.float().std())
                            if teacher.numel() > 1 else 0.))
    for tag, x in (('before', raw), ('after', student)):
        if x.shape == teacher.shape:
            x, t = x.float(), teacher.float()
            out[f'mse_{tag}_connector'] = float((x - t).pow(2).mean())
            out[f'cos_{tag}_connector'] = float(F.cosine_similarity(
                x.reshape(x.shape[0], -1), t.reshape(t.shape[0], -1),
                dim=1).mean())
    return out


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

    Args:
        student (dict): The student model config, normally
            ``{{_base_.model}}`` of the inherited mmdet/mmseg/mmpretrain
            config. Its data preprocessor serves both models.
        teacher (dict): ``config`` (local path or ``mmdet::``/``mmseg::``/
            ``mmpretrain::`` path), ``checkpoint`` (path or URL), optional
            ``strict`` (default True: a checkpoint that does not fit stops
            with the list of keys) and ``cfg_options`` (overrides merged into
            the teacher config).
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
        data_preprocessor (dict, optional): Used only when the student
            config has no data preprocessor (mmengine's Runner passes the
            config's top-level ``data_preprocessor`` here). The student's own
            always wins.
        init_cfg (dict, optional): mmengine init config.
    """

    def __init__(self,
                 student: dict,
                 teacher: dict,
                 distill: Dict[str, dict],
                 student_checkpoint: Optional[str] = None,
                 init_student_from_teacher: Optional[List[str]] = None,
                 data_preprocessor: Optional[dict] = None,
                 init_cfg: Optional[dict] = None) -> None:
        super().__init__(init_cfg=init_cfg)
        if not isinstance(student, dict) or 'type' not in student:
            raise TypeError(
                'student must be a model config dict, e.g. '
                'student={{_base_.model}} in a config inheriting the '
                "student's mmdet/mmseg config.")
        student = copy.deepcopy(student)
        if student.get('data_preprocessor') is None and data_preprocessor:
            student['data_preprocessor'] = data_preprocessor
        self.student = ROOT_MODELS.build(student)
        self.data_preprocessor = self.student.data_preprocessor

        teacher = dict(teacher)
        unknown = set(teacher) - {'config', 'checkpoint', 'strict',
                                  'cfg_options'}
        if unknown or 'config' not in teacher:
            raise ValueError(
                'teacher takes config, checkpoint, strict and cfg_options; '
                f'got {sorted(teacher)}.')
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
        self.feature_stats: Dict[str, Dict[str, float]] = {}
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
        self.pair_groups[name] = []
        for level in range(count):
            pair = name if count == 1 else f'{name}_{level}'
            self.pair_groups[name].append(pair)
            if pair in self.pairs:
                raise ValueError(f'Two distillation pairs are named {pair!r}.')
            self.pairs[pair] = _Pair(pair, parse_tap(students[level]),
                                     parse_tap(teachers[level]))
            if connectors[level] is not None:
                self.connectors[pair] = build_component(connectors[level])
            loss = build_component(losses[level])
            self.distill_losses[pair] = loss
            params = inspect.signature(loss.forward).parameters
            self._loss_takes_samples[pair] = 'data_samples' in params

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

    @torch.no_grad()
    def teacher_features(self, inputs: torch.Tensor,
                         data_samples: Optional[list] = None) -> dict:
        """Run the teacher up to its deepest tap and return its features."""
        with self.teacher_recorder.record(stop_when_done=True) as features:
            try:
                self.teacher(inputs, data_samples, mode='tensor')
            except StopForward:
                pass
        self.teacher_recorder.check_complete(features, 'teacher')
        return features

    def loss(self, inputs: torch.Tensor,
             data_samples: Optional[list] = None) -> Dict[str, torch.Tensor]:
        """The student's losses plus ``loss_distill_<pair>`` per pair."""
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
                student = connector(student, teacher)
                # e.g. TaT in anchor mode compares with the pooled teacher
                target = getattr(connector, 'teacher_target', None)
                if target is not None:
                    teacher = target(teacher)
            loss = self.distill_losses[name]
            key = LOSS_PREFIX + name
            if key in losses:
                raise KeyError(f'The student already returns a loss {key!r}.')
            if self._loss_takes_samples[name]:
                value = loss(student, teacher, data_samples=data_samples)
            else:
                value = loss(student, teacher)
            if not torch.isfinite(value).all():
                self._raise_non_finite(name, student, teacher, value)
            if stats:
                self.feature_stats[name] = feature_stats(
                    raw, student, teacher, value)
            losses[key] = value * self.loss_scales.get(name, 1.0)
        return losses

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

    def _raise_non_finite(self, name: str, student: torch.Tensor,
                          teacher: torch.Tensor, value: torch.Tensor):
        """Stop with what is not finite and what usually fixes it."""
        bad = [
            f'{who} feature' for who, x in (('teacher', teacher),
                                            ('student', student))
            if not torch.isfinite(x).all()
        ]
        if 'teacher feature' in bad:
            fix = ('the teacher gives inf/NaN: check that its checkpoint '
                   'fits its config and that the student\'s normalisation '
                   'suits it; under fp16 AMP an overflow, try bf16 or fp32')
        elif bad:
            fix = ('the student diverged: lower the learning rate or this '
                   'loss\'s weight, or add gradient clipping '
                   '(optim_wrapper.clip_grad)')
        else:
            fix = ('the features are finite but the loss is not: lower this '
                   'loss\'s weight (its value overflowed) or check its '
                   'temperature')
        raise FloatingPointError(
            f'loss_distill_{name} is {value.item()} '
            f'({", ".join(bad) or "features finite"}): {fix}.')
