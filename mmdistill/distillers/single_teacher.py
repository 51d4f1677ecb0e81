"""One frozen teacher, one student, any number of distillation pairs."""
import copy
import inspect
from collections import OrderedDict
from typing import Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn as nn
from mmengine.logging import print_log
from mmengine.model import BaseModel
from mmengine.registry import MODELS as ROOT_MODELS
from mmengine.registry import DefaultScope
from torch.utils.checkpoint import checkpoint

from mmdistill.connectors.resize import resize_to
from mmdistill.registry import MODELS
from mmdistill.utils.checkpoint import (MIN_LOADED_FRACTION, STUDENT_PREFIX,
                                        CheckpointMismatchError, fit_share,
                                        load_weights, state_fit)
from mmdistill.utils.names import UnknownNameError, closest, did_you_mean
from mmdistill.utils.tensor import autocast_enabled, gradients_in_place
from mmdistill.utils.warn import warn
from .controls import LOSS_PREFIX, DistillControls
from .guard import DistillGuard
from .messages import (WRAPPED, channel_problems, channels_of,
                       denoising_note, pair_error, weight_fix)
from .pairs import (Pair, groups_of, link_shared_embeddings, parse_pairs,
                    resolve_channels)
from .taps import FeatureRecorder, TapPathError
from .teacher import (TeacherInput, TeacherRunner, build_teacher,
                      preprocessing_differences)


def _pack_in_pair(tensor: torch.Tensor) -> tuple:
    # a detached alias (an output's own would tie it to its grad_fn in a
    # cycle) and the version, to stop on an in-place change as autograd does
    return tensor.detach(), tensor._version


def _unpack_in_pair(packed: tuple) -> torch.Tensor:
    tensor, version = packed
    if tensor._version != version:
        raise RuntimeError(
            'one of the tensors a distillation pair saved for its backward '
            f'was modified in place afterwards (version {tensor._version}, '
            f'saved at {version}); tap a layer whose output is not changed '
            'in place, or record a copy with dict(path=..., clone=True).')
    return tensor


def pair_saved_tensors():
    """Where a pair keeps what its backward needs: with the pair, whatever
    saved-tensor hooks surround the student's tapped module. A pair runs
    inside the student's forward; when the student checkpoints the tapped
    module (``with_cp``, non-reentrant ``torch.utils.checkpoint``), the
    checkpoint would otherwise take the pair's tensors for its own, and its
    recompute, which does not run the pair, would not find them.

    Returns:
        torch.autograd.graph.saved_tensors_hooks: The context to run the
        pair in; it keeps detached aliases (no reference cycle through a
        saved output) and stops the backward on an in-place change, as
        autograd does.
    """
    hooks = torch.autograd.graph.saved_tensors_hooks
    return hooks(_pack_in_pair, _unpack_in_pair)


def build_component(cfg: dict, where: str) -> nn.Module:
    """Build a connector or loss in the ``mmdistill`` scope (the runner's
    default scope is the student's, e.g. ``mmdet``); a scoped type such as
    ``'mmdet.SmoothL1Loss'`` still resolves through its own registry.

    Args:
        cfg (dict): The config, with ``type``.
        where (str): Its config key, for messages
            (``'distill.fpn.loss'``).

    Returns:
        nn.Module: The connector or loss.

    Raises:
        UnknownNameError: ``type`` is not registered (the message names
            ``where`` and the closest registered names).
        TypeError: The class does not take an argument given (the message
            names ``where`` and the arguments it takes).
    """
    kind = cfg.get('type') if isinstance(cfg, dict) else None
    # an unscoped name is looked up in mmdistill's registry: say so when it
    # is not there (a scoped 'mmdet.X' or a _scope_ key goes to mmengine)
    unscoped = isinstance(kind, str) and '.' not in kind and \
        not (isinstance(cfg, dict) and cfg.get('_scope_'))
    with DefaultScope.overwrite_default_scope('mmdistill'):
        if unscoped and MODELS.get(kind) is None:
            names = sorted(name for name in MODELS.module_dict
                           if not name.endswith('Distiller'))
            close = closest(kind, names)
            if close and close[0].lower() == kind.lower():
                close = close[:1]  # only the case differs
            hint = (f"did you mean {' or '.join(repr(c) for c in close)}? "
                    if close else '')
            raise UnknownNameError(
                f'{where}.type={kind!r} is not a registered mmdistill '
                f'connector or loss: {hint}mmdistill registers '
                f'{", ".join(names)}; another package\'s class takes its '
                "scope, e.g. 'mmdet.SmoothL1Loss'.")
        try:
            return MODELS.build(cfg)
        except KeyError as err:  # a scoped type its registry does not have
            raise UnknownNameError(f'{where}: {err}') from err
        except TypeError as err:
            raise TypeError(f'{where}: {err}.{_arguments_hint(kind, err)}'
                            ) from err


def _arguments_of(cls: type) -> List[str]:
    """The named arguments of ``cls.__init__``."""
    return [name for name, p in inspect.signature(
        cls.__init__).parameters.items()
        if name != 'self' and p.kind not in (p.VAR_POSITIONAL,
                                             p.VAR_KEYWORD)]


def _arguments_hint(kind, err: TypeError) -> str:
    """What the class takes, for an error about its arguments."""
    text = str(err)
    if 'argument' not in text:
        return ''
    with DefaultScope.overwrite_default_scope('mmdistill'):
        cls = MODELS.get(kind) if isinstance(kind, str) else kind
    hint = ''
    if inspect.isclass(cls):
        hint = f' {cls.__name__} takes {", ".join(_arguments_of(cls))}.'
    if "'align_corners'" in text:
        hint += (" align_corners goes inside resize: resize=dict("
                 "mode='bilinear', align_corners=True).")
    return hint


#: keys that mmseg's ``init_model`` (and mmdet's ``init_detector``) set on
#: ``cfg.model`` before building it as a plain model
_INFERENCE_KEYS = {'pretrained', 'train_cfg'}
#: keys of mmdet/mmseg/mmpretrain model configs that a distiller never takes
_MODEL_KEYS = _INFERENCE_KEYS | {
    'backbone', 'neck', 'decode_head', 'auxiliary_head', 'bbox_head',
    'rpn_head', 'roi_head', 'mask_head', 'head', 'test_cfg'}


def _unexpected_keys_message(cls: type, unexpected: dict) -> str:
    """Why a distiller got keys it does not take: a misspelled argument
    (the closest one is named), the student's model keys merged into it
    (``_delete_=True`` missing), or an inference API that builds
    ``cfg.model`` as a plain model."""
    takes = _arguments_of(cls)
    name = cls.__name__
    keys = sorted(unexpected)
    if not set(keys) & _MODEL_KEYS:
        listed = ', '.join(f'{key!r}{did_you_mean(key, takes)}'
                           for key in keys)
        return (f'{name} does not take {listed}; it takes '
                f'{", ".join(takes)}.')
    if set(keys) <= _INFERENCE_KEYS:
        return (
            f"{name} got {keys}, which mmseg's init_model (and mmdet's "
            "init_detector) set on the config's model to build it as a "
            'plain model. For inference with a distilled student, give them '
            'the student config (student_config.py in the work dir, '
            'written by StudentCheckpointHook, or by '
            'tools/export_student.py) and the student-only checkpoint '
            '(*_student.pth); tools/test.py takes the distillation config '
            'itself.')
    return (
        f'{name} got the keys {keys}, which are not its arguments: they '
        "look like the student model's own keys, merged in because the "
        "config's `model = dict(...)` extends the `model` it inherits from "
        "the student's config. Start it with `model = dict(_delete_=True, "
        f"type='mmdistill.{name}', student={{{{_base_.model}}}}, "
        "teacher=..., distill=...)`, so that the student's model goes in "
        f'`student` only. {name} takes {", ".join(takes)}.')


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
    checkpoint), and it runs only as far as its deepest tap. A copy of the
    distiller (``copy.deepcopy``, e.g. the averaged model of mmengine's
    ``EMAHook``) shares the teacher instead of copying it.

    Hooks of the student's recipe that reach into the model
    (``model.bbox_head``, as mmdet's ``YOLOXModeSwitchHook`` does) find the
    student's attribute: an attribute the distiller does not have is looked
    up on its student.

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
            ``data_preprocessor``: ``None`` (default) the student's data
            preprocessor serves both models (a warning when the teacher's
            config normalises otherwise); ``'own'``: every batch is
            re-normalised with the teacher's mean, std and channel order
            (see :class:`TeacherInput`).
        distill (dict): Pair name -> dict with ``student`` and ``teacher``
            taps (see :mod:`mmdistill.distillers.taps`; a ``{0-4}`` group
            expands to pairs ``<name>_0`` ... ``<name>_4``), an optional
            ``connector`` config (student side; a list gives one config per
            expanded level; ``in_channels='auto'``/``out_channels='auto'``
            take the channels of the taps, found by one dry run of both
            models at build time) and a ``loss`` config (likewise;
            ``loss_weight='auto'`` is set by ``AutoLossWeightHook``). See
            :mod:`mmdistill.distillers.pairs`.
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
                    'channels_last', 'data_preprocessor')

    def __init__(self,
                 student: dict,
                 teacher: dict,
                 distill: Dict[str, dict],
                 student_checkpoint: Optional[str] = None,
                 init_student_from_teacher: Optional[List[str]] = None,
                 guard: Optional[dict] = None,
                 data_preprocessor: Optional[dict] = None,
                 init_cfg: Optional[dict] = None,
                 **unexpected) -> None:
        if unexpected:
            raise TypeError(
                _unexpected_keys_message(type(self), unexpected))
        super().__init__(init_cfg=init_cfg)
        if not isinstance(student, dict) or 'type' not in student:
            raise TypeError(
                'student must be a model config dict, e.g. '
                'student={{_base_.model}} in a config inheriting the '
                "student's mmdet/mmseg config.")
        # checked first: a typo here should not wait for the models' build
        self.guard = DistillGuard.build(guard)
        teacher = self._teacher_options(teacher)
        self.pairs: Dict[str, Pair] = parse_pairs(distill)
        self.pair_groups = groups_of(self.pairs)
        student = copy.deepcopy(student)
        if student.get('data_preprocessor') is None and data_preprocessor:
            student['data_preprocessor'] = data_preprocessor
        try:
            self.student = ROOT_MODELS.build(student)
        except KeyError as err:
            if 'registry' not in str(err):
                raise
            raise KeyError(
                f'{err.args[0]} (building model.student). If it is a '
                "module of the student's own project, which its config "
                'imports through custom_imports: a custom_imports list '
                "written in the distillation config replaces the student "
                "config's, so list the student's modules there too, or "
                'drop it (mmdistill needs none).'
            ) from err
        self.data_preprocessor = self.student.data_preprocessor

        # Kept out of the module tree on purpose: see the class docstring.
        self.__dict__['teacher'] = build_teacher(
            teacher['config'], teacher.get('checkpoint'),
            teacher.get('strict', True), teacher.get('cfg_options'))
        own_input = teacher.get('data_preprocessor') == 'own'
        if not own_input:
            self._warn_preprocessing()

        self.student_recorder = FeatureRecorder(
            self.student, {n: p.student for n, p in self.pairs.items()},
            'student')
        self.teacher_recorder = FeatureRecorder(
            self.teacher, {n: p.teacher for n, p in self.pairs.items()},
            'teacher')
        self.teacher_runner = TeacherRunner(
            self.teacher, self.teacher_recorder, teacher.get('dtype'),
            teacher.get('channels_last', False),
            TeacherInput(self.data_preprocessor,
                         self.teacher.data_preprocessor)
            if own_input else None)
        resolve_channels(self.pairs, self._measure_channels)
        self.connectors = nn.ModuleDict()
        self.distill_losses = nn.ModuleDict()
        self._loss_takes_samples: Dict[str, bool] = {}
        for name, pair in self.pairs.items():
            if pair.connector is not None:
                self.connectors[name] = build_component(
                    pair.connector, pair.config_path('connector'))
            self.distill_losses[name] = build_component(
                pair.loss, pair.config_path('loss'))
            params = inspect.signature(
                self.distill_losses[name].forward).parameters
            self._loss_takes_samples[name] = 'data_samples' in params
        #: groups of pairs whose connectors share embeddings (TaT)
        self.shared_pairs = link_shared_embeddings(self.pairs,
                                                   self.connectors)
        # pair -> the pairs run with it: its group when the group is
        # recomputed in the backward (with_cp), else itself
        self._units: Dict[str, Tuple[str, ...]] = {
            name: (name, ) for name in self.pairs}
        for group in self.shared_pairs:
            if any(self.pairs[n].with_cp for n in group):
                for name in group:
                    self._units[name] = tuple(group)
        self._check_channels()
        self._check_loss_taps()
        #: the one object hooks change (schedule, automatic weights, stats)
        self.controls = DistillControls(
            self.pairs, [n for n, p in self.pairs.items() if p.auto_weight])
        self._warned_no_grad: set = set()
        self._amp = False  # whether the last loss() ran under autocast

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
    def _teacher_options(self, teacher: dict) -> dict:
        teacher = dict(teacher)
        unknown = set(teacher) - set(self.TEACHER_KEYS)
        if unknown or 'config' not in teacher:
            raise ValueError(
                f'teacher takes {", ".join(self.TEACHER_KEYS)} (config '
                f'required); got {sorted(teacher)}.')
        if teacher.get('data_preprocessor') not in (None, 'own'):
            raise ValueError(
                "teacher.data_preprocessor takes 'own' (re-normalise each "
                "batch the teacher's way) or None (the student's serves "
                f"both); got {teacher['data_preprocessor']!r}.")
        return teacher

    @torch.no_grad()
    def _measure_channels(self) -> Dict[str, Tuple[Optional[int], ...]]:
        """Pair -> (student, teacher) channels of its taps, from one dummy
        batch of the student's task through both models (eval mode, no
        gradients), for ``in_channels='auto'``/``out_channels='auto'``."""
        from mmdistill.testing.batches import KIND_OF_SCOPE, random_batch
        scope = type(self.student).__module__.split('.')[0]
        if scope not in KIND_OF_SCOPE:
            raise ValueError(
                "in_channels='auto' / out_channels='auto' runs the models "
                f'on a dummy batch of their task, which {scope} models '
                f'({type(self.student).__name__}) do not have here (known: '
                f'{sorted(KIND_OF_SCOPE)}): give the channels as numbers.')
        kind = KIND_OF_SCOPE[scope]
        classes = [m.num_classes for _, m in self.student.named_modules()
                   if isinstance(getattr(m, 'num_classes', None), int)
                   and m.num_classes > 0]
        size = (224, 224) if kind == 'cls' else (256, 256)
        # one image: mmseg < 1.2 refuses batches in test mode
        batch = random_batch(kind, size, 1, classes[0] if classes else 0)
        was_training = self.student.training
        self.student.eval()
        try:
            data = self.data_preprocessor(batch, False)
            with self.student_recorder.record() as student:
                self.student(data['inputs'], data['data_samples'],
                             mode='loss')
            # float32 weights stay so: init_student_from_teacher and
            # TeacherCheckHook read them after the build
            teacher = self.teacher_runner.features(
                data['inputs'], data['data_samples'], cast_weights=False)
        finally:
            self.student.train(was_training)
        return {name: (channels_of(student.get(name)),
                       channels_of(teacher.get(name)))
                for name in self.pairs}

    def _check_channels(self) -> None:
        """Stop at build time when a connector's ``in_channels`` or
        ``out_channels`` contradicts what its taps give, where the tapped
        module says so without running (a conv, linear or norm layer)."""
        problems = []
        for name, connector in self.connectors.items():
            problems += channel_problems(self.pairs[name], connector,
                                         self.student, self.teacher)
        if problems:
            raise ValueError('Connector channels do not fit their taps:\n' +
                             '\n'.join(problems))

    def _check_loss_taps(self) -> None:
        """Stop at build time when a loss's settings contradict its tapped
        layers, for losses that can tell (``tap_problems``, e.g.
        ``ViTAttentionLoss``'s head counts)."""
        problems = []
        for name, loss in self.distill_losses.items():
            check = getattr(loss, 'tap_problems', None)
            if check is None:
                continue
            pair = self.pairs[name]
            problems += [
                f'{pair.config_path("loss")}.{problem}'
                for problem in check(self.student, pair.student.path,
                                     self.teacher, pair.teacher.path)
            ]
        if problems:
            raise ValueError('Loss settings do not fit their taps:\n' +
                             '\n'.join(problems))

    def _warn_preprocessing(self) -> None:
        found = preprocessing_differences(self.data_preprocessor,
                                          self.teacher.data_preprocessor)
        if found:
            warn(
                'The teacher config preprocesses its input unlike the '
                f'student ({"; ".join(found)}); the student\'s data '
                'preprocessor serves both models, so the teacher sees '
                'inputs unlike in its own training. Set '
                "teacher=dict(..., data_preprocessor='own') to re-normalise "
                "each batch the teacher's way.")

    # -------------------------------------------------------- module plumbing
    def __getattr__(self, name: str):
        try:
            return super().__getattr__(name)
        except AttributeError as err:
            missing = err
        student = self.__dict__.get('_modules', {}).get('student')
        if student is None or name.startswith('__'):
            raise missing
        try:
            return getattr(student, name)
        except AttributeError:
            raise AttributeError(
                f'{type(self).__name__!r} object has no attribute {name!r}, '
                f'nor has its student ({type(student).__name__})') from None

    def __deepcopy__(self, memo: dict) -> 'SingleTeacherDistiller':
        # The frozen teacher is shared: EMAHook's copy averages the
        # student's weights and never runs it.
        memo[id(self.teacher)] = self.teacher
        copied = type(self).__new__(type(self))
        memo[id(self)] = copied
        for key, value in self.__dict__.items():
            copied.__dict__[key] = copy.deepcopy(value, memo)
        # moving or casting the copy (EMAHook(device=...)) leaves the
        # shared teacher where the training distiller keeps it
        copied.__dict__['_teacher_shared'] = True
        return copied

    def get_layer_depth(self, param_name: str) -> Tuple[int, int]:
        """The layer depth of a parameter for mmpretrain's layer-wise
        learning-rate decay (``LearningRateDecayOptimWrapperConstructor``):
        the student's, by its name in the student; connectors and losses
        count as its head.

        Returns:
            tuple[int, int]: The layer's depth and the number of layers.
        """
        student = self.student
        if not hasattr(student, 'get_layer_depth'):
            raise NotImplementedError(
                f'The student ({type(student).__name__}) has no '
                'get_layer_depth: layer-wise learning-rate decay needs an '
                'mmpretrain classifier whose backbone has one.')
        prefix = 'student.'
        if param_name.startswith(prefix):
            param_name = param_name[len(prefix):]
        return student.get_layer_depth(param_name)

    def train(self, mode: bool = True) -> 'SingleTeacherDistiller':
        super().train(mode)
        self.teacher.train(False)
        return self

    def _apply(self, fn, *args, **kwargs):
        super()._apply(fn, *args, **kwargs)
        if not self.__dict__.get('_teacher_shared', False):
            self.teacher._apply(fn, *args, **kwargs)
        return self

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        """A checkpoint of the student alone (the config's ``load_from``, a
        student trained or pretrained with its own config) goes into the
        student: its keys lack ``student.``, so mmengine would load nothing
        of it and train from the initialisation, with a warning. One that
        fits less than 10 % of the student's values stops, naming what to
        give instead. (``--resume`` refuses such a checkpoint before it
        gets here: ``StudentCheckpointHook.after_load_checkpoint``.)"""

        def name(key: str) -> str:  # as mmengine's revise_keys
            key = key[len(prefix):]
            return key[len('module.'):] if key.startswith('module.') else key

        keys = [k for k in state_dict if k.startswith(prefix)]
        # the preprocessor is the student's own (and keeps no weights)
        own = tuple(f'{n}.' for n, _ in self.named_children()
                    if n != 'data_preprocessor')
        names = [name(k) for k in keys]
        if names and not any(n.startswith(own) for n in names) and any(
                not n.startswith('data_preprocessor.') for n in names):
            state = {n: state_dict[k] for k, n in zip(keys, names)}
            fit = state_fit(self.student.state_dict(), state)
            share = fit_share(fit, 'student')
            if fit['fraction'] < MIN_LOADED_FRACTION:
                raise CheckpointMismatchError(
                    'The checkpoint loaded into the distiller (load_from) '
                    'is neither a runner checkpoint of a distillation '
                    "(keys 'student.…') nor one of its student: "
                    f'{share} would load. Give load_from a checkpoint of '
                    "the student's model (it goes into the student), or a "
                    'runner checkpoint of this distillation; the teacher '
                    'takes its weights from teacher.checkpoint.')
            for key, new in zip(keys, names):
                state_dict[f'{prefix}{STUDENT_PREFIX}{new}'] = \
                    state_dict.pop(key)
            print_log(
                'The checkpoint loaded into the distiller holds the student '
                "alone (no 'student.' keys): it goes into the student, "
                f'{share}.', logger='current')
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

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
        """The student's losses plus ``loss_distill_<pair>`` per pair:
        run the teacher to its taps, then the student; each pair connects and
        compares as soon as its student tap is recorded; weight.

        Nothing here reads a value back to the host: the checks of the
        values run after the update (:meth:`train_step`)."""
        self._check_last_iteration(inputs, data_samples)
        if self.training and self.controls.measuring and \
                not self.controls.auto_weights_hooked:
            names = [n for n, w in self.controls.loss_weights.items()
                     if w is None]
            raise ValueError(
                f"The pairs {names} have loss_weight='auto', which "
                'AutoLossWeightHook sets, and no such hook runs: add '
                "dict(type='mmdistill.AutoLossWeightHook', target_ratio=0.5,"
                ' warmup_iters=100) to custom_hooks, or give each '
                'loss_weight as a number.')
        self._amp = autocast_enabled(inputs.device.type)
        if self.training and not self.controls.teacher_needed:
            # Every distillation loss is scheduled off: the student trains
            # alone and the teacher does not run.
            losses = self.student(inputs, data_samples, mode='loss')
            losses.update(self._zero_losses())
            return losses
        # The teacher first: its forward's working memory is freed before
        # the student's activations build up, so only its tapped features
        # are held at the step's peak (after the student, that working
        # memory came on top of all the student's activations).
        teacher_features = self.teacher_features(inputs, data_samples)
        values, recorded = {}, {}
        grad_enabled = torch.is_grad_enabled()

        def pair_now(name: str, raw: torch.Tensor) -> None:
            # Each pair's connector and loss run as soon as its student tap
            # is recorded, inside the student's forward. Their backward then
            # comes after that of the student's layers past the tap (the
            # autograd engine runs the most recently created nodes first),
            # whose activations are freed by then: the pair's working memory
            # no longer adds to the step's peak, the activations of all the
            # student's layers.
            self._warn_no_grad(name, raw)
            recorded[name] = raw
            unit = self._units[name]
            if any(n not in recorded for n in unit):
                return  # pairs recomputed together run with the last one
            with torch.set_grad_enabled(grad_enabled), pair_saved_tensors():
                results = self.run_pairs(
                    unit, [recorded[n] for n in unit],
                    [teacher_features[n].detach() for n in unit],
                    data_samples)
            for n, (value, student, teacher) in zip(unit, results):
                # without a connector the tap is what the loss compares
                self.controls.record_stats(
                    n, recorded[n],
                    student if n in self.connectors else recorded[n],
                    teacher, value)
                values[n] = value

        with self.student_recorder.record(
                on_feature=pair_now) as student_features:
            losses = self.student(inputs, data_samples, mode='loss')
        self.student_recorder.check_complete(student_features, 'student loss')
        for name in self.pairs:
            weighted = self.controls.weighted(name, values[name])
            clash = set(weighted) & set(losses)
            if clash:
                raise KeyError(
                    f'The student already returns a loss {clash.pop()!r}.')
            losses.update(weighted)
        self.controls.collect_stats = False
        return losses

    def run_pairs(self, names: Tuple[str, ...], raws: List[torch.Tensor],
                  teachers: List[torch.Tensor],
                  data_samples: Optional[list]) -> list:
        """Connector and loss of the pairs ``names`` (one pair, or those
        recomputed together): ``(loss, connected student, target)`` each.
        With ``with_cp`` only the inputs are kept for the backward, which
        runs them again (without a second update of the norm layers'
        running statistics)."""
        inputs = [*raws, *teachers]
        # each distinct tensor passed once: the backward's recompute gets
        # new tensor objects, and pairs of one tap must still get one
        # (TaT's shared embeddings are matched on the student's identity)
        distinct = []
        for x in inputs:
            if not any(x is y for y in distinct):
                distinct.append(x)
        where = [next(i for i, y in enumerate(distinct) if x is y)
                 for x in inputs]

        def run(*tensors) -> tuple:
            args = [tensors[i] for i in where]
            out = []
            # a pair's backward runs once and nothing reads its connector's
            # output after it: gradients may be written over tensors of the
            # pair's own (see gradients_in_place)
            with gradients_in_place():
                for name, raw, teacher in zip(names, args,
                                              args[len(names):]):
                    student, target = self.connect(name, raw, teacher)
                    out += [self.pair_loss(name, student, target,
                                           data_samples, raw), student,
                            target]
            return tuple(out)

        if not any(self.pairs[n].with_cp for n in names):
            out = run(*distinct)
        else:
            modules = [m for n in names for m in (
                self.connectors[n] if n in self.connectors else None,
                self.distill_losses[n]) if m is not None]
            calls = []

            def run_once(*tensors) -> tuple:
                calls.append(None)
                if len(calls) == 1:
                    return run(*tensors)
                # again, in the backward: the same values, no side effect
                buffers = [b for m in modules for b in m.buffers()]
                kept = [b.clone() for b in buffers]
                try:
                    return run(*tensors)
                finally:
                    with torch.no_grad():
                        for buffer, value in zip(buffers, kept):
                            buffer.copy_(value)

            out = checkpoint(run_once, *distinct, use_reentrant=False)
        return [out[i:i + 3] for i in range(0, len(out), 3)]

    def connect(self, name: str, student: torch.Tensor,
                teacher: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """The pair's connector on the student feature, after bringing it
        to the teacher's size when the connector config says ``resize``
        (and the teacher target it compares with, e.g. TaT's pooled teacher
        in anchor mode); unchanged without a connector."""
        if name not in self.connectors:
            return student, teacher
        connector, pair = self.connectors[name], self.pairs[name]
        try:
            if pair.resize is not None:
                student = resize_to(student, teacher.shape[-2:],
                                    where=pair.config_path('connector'),
                                    **pair.resize)
            connected = connector(student, teacher)
            target = getattr(connector, 'teacher_target', None)
            if target is not None:
                teacher = target(teacher)
        except WRAPPED as err:
            if type(err) not in WRAPPED:  # e.g. out of memory
                raise
            raise pair_error(pair, 'connector', err, connector,
                             self.distill_losses[name], student, teacher,
                             notes=denoising_note(pair, self.student,
                                                  student, teacher))
        return connected, teacher

    def pair_loss(self, name: str, student: torch.Tensor,
                  teacher: torch.Tensor, data_samples: Optional[list] = None,
                  raw: Optional[torch.Tensor] = None) -> torch.Tensor:
        """The pair's loss (with its own ``loss_weight``, before the
        schedule and automatic weight); ``raw`` is the student feature
        before the connector, for the message when it fails."""
        loss = self.distill_losses[name]
        try:
            if self._loss_takes_samples[name]:
                value = loss(student, teacher, data_samples=data_samples)
            else:
                value = loss(student, teacher)
        except WRAPPED as err:
            if type(err) not in WRAPPED:
                raise
            raw = student if raw is None else raw
            pair = self.pairs[name]
            raise pair_error(pair, 'loss', err,
                             self.connectors[name] if name in self.connectors
                             else None, loss, raw, teacher, student,
                             denoising_note(pair, self.student, raw,
                                            teacher))
        if not isinstance(value, torch.Tensor) or value.numel() != 1:
            # mmengine would log and optimise the mean of a map
            got = (f'a tensor of shape {tuple(value.shape)}'
                   if isinstance(value, torch.Tensor) else
                   f'a {type(value).__name__}')
            raise ValueError(
                f'{self.pairs[name].config_path("loss")} '
                f'({type(loss).__name__}) returned {got}; a distillation '
                'loss must return one number (a 0-d tensor): reduce it in '
                "the loss's forward (e.g. .sum() or .mean()).")
        return value

    def _warn_no_grad(self, name: str, student: torch.Tensor) -> None:
        if (self.training and not student.requires_grad
                and name not in self._warned_no_grad):
            self._warned_no_grad.add(name)
            warn(
                f'The student tap of pair {name!r} '
                f'({self.pairs[name].student}) carries no gradient (a frozen '
                'stage, e.g. frozen_stages, no_grad code, or a layer inside a '
                'block the student checkpoints, with_cp=True): its loss '
                'cannot train the student. Tap a trainable layer, or the '
                'checkpointed block itself.')

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

    # ---------------------------------------------------------------- guard
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

    def _check_last_iteration(self, inputs, data_samples) -> None:
        if self.training and self.guard.pending:
            # under DDP mmengine's wrapper calls parse_losses but not our
            # train_step: check the last iteration now (its values reached
            # the host when mmengine logged them; nothing waits here)
            self._guard_check(None, wait=False, inputs=inputs,
                              data_samples=data_samples,
                              when=' (checked at the next iteration)')

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
        return weight_fix(self.pairs[name], self.distill_losses[name])

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
