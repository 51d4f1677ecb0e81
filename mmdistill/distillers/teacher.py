"""Building the frozen teacher: its own config, its own registry scope, its
checkpoint loaded weights-only with a report of what fits."""
import contextlib
import copy
import math
import warnings
from typing import Optional

import torch
import torch.nn as nn
from mmengine.registry import MODELS as ROOT_MODELS
from mmengine.registry import DefaultScope

from mmdistill.utils.checkpoint import load_weights
from mmdistill.utils.config import load_config
from mmdistill.utils.tensor import autocast_enabled
from mmdistill.utils.version_guard import check_scope
from mmdistill.utils.warn import warn
from .taps import StopForward


def build_teacher(config: str,
                  checkpoint: Optional[str],
                  strict: bool = True,
                  cfg_options: Optional[dict] = None) -> nn.Module:
    """Build a teacher from its config in its own registry scope, load its
    weights on CPU and freeze it (eval mode, no gradients)."""
    if not checkpoint:
        raise ValueError(
            'teacher.checkpoint is required: a teacher with random weights '
            'teaches nothing. Give the weights released with '
            f'{config!r} (a local path or URL).')
    if isinstance(checkpoint, str) and checkpoint.startswith('FILL ME'):
        raise ValueError(
            'teacher.checkpoint is still the placeholder written by '
            'tools/analysis/suggest_pairs.py: set it to the weights trained '
            f'with {config!r} (a local path or URL).')
    cfg = load_config(config)
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    if 'model' not in cfg:
        raise KeyError(f'The teacher config {config!r} has no "model".')
    scope = cfg.get('default_scope', None)
    check_scope(scope)
    model_cfg = copy.deepcopy(cfg.model)
    # as mmengine's Runner does: a config-level data preprocessor (the
    # mmpretrain style) is the model's when the model names none
    if model_cfg.get('data_preprocessor') is None and cfg.get(
            'data_preprocessor') is not None:
        model_cfg['data_preprocessor'] = copy.deepcopy(cfg.data_preprocessor)
    with DefaultScope.overwrite_default_scope(scope):
        teacher = ROOT_MODELS.build(model_cfg)
    load_weights(teacher, checkpoint, strict, 'teacher',
                 hint='set teacher=dict(..., strict=False)')
    teacher.requires_grad_(False)
    teacher.eval()
    return teacher


def swaps_channels(preprocessor) -> Optional[bool]:
    """Whether a data preprocessor swaps BGR and RGB (mmdet/mmengine
    ``_channel_conversion``, mmseg ``channel_conversion``, mmpretrain
    ``to_rgb``); None when it does not say."""
    for name in ('_channel_conversion', 'channel_conversion', 'to_rgb'):
        value = getattr(preprocessor, name, None)
        if value is not None:
            return bool(value)
    return None


def _normalisation(preprocessor, channels: int):
    """(mean, std) of a data preprocessor as (C,) float64 tensors; zeros and
    ones when it does not normalise."""
    mean = getattr(preprocessor, 'mean', None)
    std = getattr(preprocessor, 'std', None)
    if not getattr(preprocessor, '_enable_normalize', True) or not (
            isinstance(mean, torch.Tensor) and isinstance(std, torch.Tensor)):
        return (torch.zeros(channels, dtype=torch.float64),
                torch.ones(channels, dtype=torch.float64))
    return (mean.detach().double().flatten().cpu(),
            std.detach().double().flatten().cpu())


def preprocessing_differences(student, teacher) -> list:
    """How the teacher's data preprocessor differs from the student's
    (channel order, mean, std), in words; empty when they agree or either
    does not say."""
    found = []
    order = [swaps_channels(p) for p in (student, teacher)]
    if None not in order and order[0] != order[1]:
        found.append(f'BGR->RGB: student {order[0]}, teacher config '
                     f'{order[1]}')
    for attr in ('mean', 'std'):
        a, b = getattr(student, attr, None), getattr(teacher, attr, None)
        if isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor):
            a_list = [round(v, 3) for v in a.flatten().tolist()]
            b_list = [round(v, 3) for v in b.flatten().tolist()]
            if a_list != b_list:
                found.append(f'{attr}: student {a_list}, teacher config '
                             f'{b_list}')
    return found


class TeacherInput:
    """Re-normalise a batch the student's data preprocessor made into what
    the teacher's own would make: ``teacher.data_preprocessor='own'``.

    With the student's mean ``m_s``, std ``s_s`` (in its channel order) and
    the teacher's ``m_t``, ``s_t``, the raw image is ``x * s_s + m_s``; the
    teacher gets ``(P(x * s_s + m_s) - m_t) / s_t = P(x) * a + b`` where
    ``P`` reverses the channels when one of the two converts BGR to RGB and
    the other does not, ``a = P(s_s) / s_t`` and ``b = (P(m_s) - m_t) /
    s_t`` (computed once, in float64). Two elementwise operations per step
    on the device, no host synchronisation. Padding the student's
    preprocessor added after normalising (value 0) becomes ``b`` for the
    teacher, not the teacher's own padding value.

    Args:
        student: The student's data preprocessor.
        teacher: The teacher's data preprocessor.
    """

    def __init__(self, student, teacher) -> None:
        mean = getattr(student, 'mean', None)
        channels = mean.numel() if isinstance(mean, torch.Tensor) else 3
        m_s, s_s = _normalisation(student, channels)
        m_t, s_t = _normalisation(teacher, channels)
        if m_t.numel() != channels:
            raise ValueError(
                f'teacher.data_preprocessor=\'own\': the teacher normalises '
                f'{m_t.numel()} channels, the student {channels}.')
        order = [swaps_channels(p) for p in (student, teacher)]
        self.reverse = None not in order and order[0] != order[1]
        if self.reverse:
            if channels != 3:
                raise ValueError(
                    "teacher.data_preprocessor='own' reverses the channel "
                    f'order (BGR/RGB), which needs 3 channels, not '
                    f'{channels}.')
            m_s, s_s = m_s.flip(0), s_s.flip(0)
        scale, shift = s_s / s_t, (m_s - m_t) / s_t
        self.identity = not self.reverse and bool(
            torch.allclose(scale, torch.ones_like(scale))
            and torch.allclose(shift, torch.zeros_like(shift)))
        self.scale = scale.float().view(1, -1, 1, 1)
        self.shift = shift.float().view(1, -1, 1, 1)
        self._on = {}

    def __call__(self, inputs: torch.Tensor) -> torch.Tensor:
        if self.identity or inputs.dim() != 4:
            return inputs
        if self.reverse:
            inputs = inputs.flip(1)
        key = (inputs.device, inputs.dtype)
        if key not in self._on:
            # copied to a device once, not every step (a copy from the host
            # would wait for the queued work)
            self._on[key] = (self.scale.to(*key), self.shift.to(*key))
        scale, shift = self._on[key]
        return torch.addcmul(shift, inputs, scale)


TEACHER_DTYPES = {'float32': torch.float32, 'bfloat16': torch.bfloat16,
                  'float16': torch.float16}
_HALF = (torch.float16, torch.bfloat16)


def _plain_forwards() -> set:
    """The forwards of the layers whose weights autocast casts to its dtype
    at every call: torch's convolutions and ``Linear``, and mmcv's wrappers
    of them, which add only the empty-input case."""
    classes = [nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d,
               nn.ConvTranspose2d, nn.ConvTranspose3d, nn.Linear]
    try:
        from mmcv.cnn.bricks import wrappers
        classes += [getattr(wrappers, name) for name in (
            'Conv2d', 'Conv3d', 'ConvTranspose2d', 'ConvTranspose3d',
            'Linear') if hasattr(wrappers, name)]
    except ImportError:  # pragma: no cover - mmcv is a dependency
        pass
    return {cls.forward for cls in classes}


def cast_layer_weights(model: nn.Module, dtype: torch.dtype) -> list:
    """Store in ``dtype`` the float32 weights and biases of the layers that
    autocast runs in ``dtype`` (convolutions, linear layers with their plain
    forward), which it would otherwise cast at every call; norm layers and
    anything else keep float32, as under autocast.

    Args:
        model (nn.Module): A frozen model.
        dtype (torch.dtype): ``torch.bfloat16`` or ``torch.float16``.

    Returns:
        list: ``(parameter, float32 data)`` of what was cast, for
        :func:`restore_weights`.
    """
    forwards = _plain_forwards()
    cast = []
    for module in model.modules():
        if type(module).forward not in forwards:
            continue
        for name in ('weight', 'bias'):
            param = getattr(module, name, None)
            if isinstance(param, torch.Tensor) and \
                    param.dtype is torch.float32:
                cast.append((param, param.data))
                param.data = param.data.to(dtype)
    return cast


def restore_weights(cast: list) -> None:
    """Undo :func:`cast_layer_weights` (the float32 data it returned)."""
    for param, data in cast:
        param.data = data


def check_autocast(device_type: str, dtype: torch.dtype) -> None:
    """Raise when this torch cannot autocast ``device_type`` to ``dtype``
    (torch < 2.3 turns CPU autocast off, with a warning, for float16)."""
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        try:
            with torch.autocast(device_type, dtype=dtype):
                ok = autocast_enabled(device_type)
        except (RuntimeError, ValueError) as err:
            ok, reason = False, f' ({err})'
        else:
            reason = ''
    if not ok:
        name = str(dtype).replace('torch.', '')
        raise ValueError(
            f"teacher.dtype='{name}' is not supported on {device_type} by "
            f'torch {torch.__version__}{reason}: use '
            "teacher.dtype='bfloat16' (CPU autocast supports it) or drop "
            'teacher.dtype (float32).')


class TeacherRunner:
    """Runs the frozen teacher as far as its deepest tap and returns the
    tapped features, optionally cheaper.

    Args:
        model (nn.Module): The teacher (frozen, eval mode).
        recorder: The teacher's :class:`~.taps.FeatureRecorder`.
        dtype (str, optional): ``'bfloat16'`` or ``'float16'``: run the
            teacher under ``torch.autocast`` in this dtype (device type from
            the inputs), whatever precision the student trains in;
            ``'float32'``: autocast off for the teacher (float32 even when
            the student trains with AMP); ``None`` (default): the ambient
            precision (float32, or the student's AMP dtype under AMP).
        channels_last (bool): Convert the teacher's weights (once) and its
            input (every step) to ``torch.channels_last``, which fused
            convolution kernels prefer.
        convert_input (TeacherInput, optional): Re-normalise the student's
            batch the teacher's way (``teacher.data_preprocessor='own'``).

    With either option the features are returned contiguous, half precision
    upcast to float32, so connectors (float32 weights, outside autocast when
    the student trains in float32) and losses get what a float32 teacher
    gives them.

    With a half ``dtype`` the weights of the teacher's convolutions and
    linear layers are stored in that dtype from the first forward on
    (:func:`cast_layer_weights`): the same values as autocast casting them
    at every call, half their memory, and no cast kernels per step. Should
    that forward fail with them (a layer that runs outside autocast), they
    go back to float32 with a warning and the forward runs again. The cast
    waits for the first training forward (the build's dry run for
    ``'auto'`` channels does not cast) so that what reads the teacher's
    weights before training (``init_student_from_teacher``,
    :class:`~mmdistill.hooks.TeacherCheckHook`) sees them in float32.
    """

    def __init__(self, model: nn.Module, recorder, dtype: Optional[str] = None,
                 channels_last: bool = False,
                 convert_input: Optional[TeacherInput] = None) -> None:
        if dtype is not None and dtype not in TEACHER_DTYPES:
            raise ValueError(
                f'teacher.dtype must be one of {sorted(TEACHER_DTYPES)}, got '
                f'{dtype!r}.')
        self.model = model
        self.recorder = recorder
        self.dtype = TEACHER_DTYPES[dtype] if dtype else None
        self.channels_last = bool(channels_last)
        self.convert_input = convert_input
        self._checked = set()
        #: whether the layers' weights are still to be cast to ``dtype``
        self.cast_pending = self.dtype in _HALF
        if self.dtype is torch.float16 and not torch.cuda.is_available():
            # a CPU-only machine runs the teacher on the CPU: say it now
            check_autocast('cpu', self.dtype)
        if self.channels_last:
            model.to(memory_format=torch.channels_last)

    @property
    def converts(self) -> bool:
        return self.dtype is not None or self.channels_last

    @torch.no_grad()
    def features(self, inputs: torch.Tensor,
                 data_samples: Optional[list] = None,
                 stop: bool = True,
                 cast_weights: bool = True) -> dict:
        """Run the teacher up to its deepest tap (the whole model with
        ``stop=False``, to measure what stopping saves); name -> feature.

        ``cast_weights=False`` runs it without casting the weights yet
        (the same values, under autocast): for a dry run while the
        distiller is built, before what reads the float32 weights."""
        return self._features(inputs, data_samples, stop, cast_weights,
                              self.dtype)

    @torch.no_grad()
    def half_precision_error(self, inputs: torch.Tensor,
                             data_samples: Optional[list] = None) -> dict:
        """How far the tapped features at a half ``dtype`` are from float32
        on one batch: tap name -> ``(relative difference, all finite)``,
        the relative difference being ``||half - float32|| / ||float32||``
        (inf where the half features are not all finite; taps not finite
        in float32 either are left out). Empty without a
        half ``dtype``, or once the weights are stored in it (after the
        first training forward: no float32 teacher is left to compare)."""
        if self.dtype not in _HALF or not self.cast_pending:
            return {}
        half = self._features(inputs, data_samples, True, False, self.dtype)
        full = self._features(inputs, data_samples, True, False,
                              torch.float32)
        errors = {}
        for name, value in half.items():
            if not isinstance(value, torch.Tensor):
                continue
            reference = full[name].double()
            if not bool(torch.isfinite(reference).all()):
                continue  # not the dtype's doing
            finite = bool(torch.isfinite(value).all())
            diff = (value.double() - reference).norm()
            size = reference.norm()
            errors[name] = (float(diff / size) if finite and size > 0 else
                            0.0 if finite and diff == 0 else math.inf,
                            finite)
        return errors

    def _features(self, inputs: torch.Tensor, data_samples: Optional[list],
                  stop: bool, cast_weights: bool,
                  dtype: Optional[torch.dtype]) -> dict:
        """:meth:`features` in ``dtype`` (see the class's ``dtype``)."""
        if self.convert_input is not None:
            inputs = self.convert_input(inputs)
        if self.channels_last and inputs.dim() == 4:
            inputs = inputs.contiguous(memory_format=torch.channels_last)
        context = contextlib.nullcontext()
        if dtype is torch.float32:
            context = torch.autocast(inputs.device.type, enabled=False)
        elif dtype is not None:
            device_type = inputs.device.type
            if device_type not in self._checked:
                check_autocast(device_type, dtype)
                self._checked.add(device_type)
            context = torch.autocast(device_type, dtype=dtype)
        if self.cast_pending and cast_weights:
            features = self._first_run_cast(inputs, data_samples, stop,
                                            context)
        else:
            features = self._run(inputs, data_samples, stop, context)
        self.recorder.check_complete(features, 'teacher')
        if self.converts:
            # one conversion per tensor: pairs that tap one layer keep
            # getting one tensor (TaT's shared embeddings need it)
            converted = {}
            for name, value in features.items():
                if isinstance(value, torch.Tensor):
                    if id(value) not in converted:
                        converted[id(value)] = value.to(
                            dtype=(torch.float32 if value.dtype in _HALF
                                   else value.dtype),
                            memory_format=torch.contiguous_format)
                    features[name] = converted[id(value)]
        return features

    def _run(self, inputs, data_samples, stop, context) -> dict:
        with self.recorder.record(stop_when_done=stop) as features, context:
            try:
                self.model(inputs, data_samples, mode='tensor')
            except StopForward:
                pass
        return features

    def _first_run_cast(self, inputs, data_samples, stop, context) -> dict:
        """The first forward, with the layers' weights cast to ``dtype``
        (kept so if it runs; back to float32, with a warning, if not)."""
        self.cast_pending = False
        cast = cast_layer_weights(self.model, self.dtype)
        try:
            features = self._run(inputs, data_samples, stop, context)
        except RuntimeError as err:
            restore_weights(cast)
            features = self._run(inputs, data_samples, stop, context)
            name = str(self.dtype).replace('torch.', '')
            warn(
                f"teacher.dtype='{name}': the teacher does not run with its "
                f'convolution and linear weights stored in {name} ({err}); '
                'they stay float32 and autocast casts them at every step '
                '(same values, more memory and time). A layer of the '
                'teacher probably runs outside autocast.', UserWarning)
        return features
