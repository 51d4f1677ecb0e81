"""What the distiller says when a pair does not fit: every message names the
pair, both taps, the shapes and the config key to change."""
from typing import List, Optional, Sequence

import torch
import torch.nn as nn

from .pairs import Pair
from .taps import Tap

#: errors of a connector or loss that are re-raised naming the pair
WRAPPED = (ValueError, TypeError, RuntimeError, IndexError, AssertionError)


def shape_of(x) -> str:
    return str(tuple(x.shape)) if isinstance(x, torch.Tensor) else \
        type(x).__name__


def channels_of(x) -> Optional[int]:
    """The channel count of a feature: dim 1 of (N, C, ...), the last dim
    of (N, L, C) tokens."""
    if not isinstance(x, torch.Tensor) or x.dim() < 2:
        return None
    return int(x.shape[-1] if x.dim() == 3 else x.shape[1])


def kind_of(x: torch.Tensor) -> str:
    """What a feature is, by its dimensions, for messages."""
    return {2: 'vectors (N, C) (logits or pooled features)',
            3: 'tokens (N, L, C) (a transformer layer)',
            4: 'maps (N, C, H, W)'}.get(x.dim(), f'{x.dim()}-D tensors')


#: connectors that take tokens (N, L, C) or vectors (N, C); the others
#: take maps (N, C, H, W)
TOKEN_CONNECTORS = ('TokenProjector', 'IdentityConnector')


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


def channel_problems(pair: Pair, connector: nn.Module, student: nn.Module,
                     teacher: nn.Module) -> List[str]:
    """Where a connector's ``in_channels``/``out_channels`` contradict what
    its taps give (for taps whose module says it without running)."""
    problems = []
    for attr, model, tap, side in (
            ('in_channels', student, pair.student, 'student'),
            ('out_channels', teacher, pair.teacher, 'teacher')):
        want = getattr(connector, attr, None)
        have = tap_channels(model, tap)
        if isinstance(want, int) and have is not None and want != have:
            problems.append(
                f'  {pair}: {type(connector).__name__} has {attr}={want}, '
                f'but the {side} tap {tap} gives {have} channels: set '
                f'{pair.config_path("connector")}.{attr}={have} (or '
                f"'auto').")
    return problems


def pair_error(pair: Pair, stage: str, err: Exception,
               connector: Optional[nn.Module], loss: nn.Module,
               raw: torch.Tensor, teacher: torch.Tensor,
               student: Optional[torch.Tensor] = None,
               notes: Sequence[str] = ()) -> Exception:
    """``err``'s type with a message naming the pair, both taps, their
    shapes and what to change (and ``notes``, what the caller knows of the
    models); chained to ``err`` unless the message replaces its advice."""
    module = connector if stage == 'connector' else loss
    what = type(module).__name__
    sizes = [f'{a}={getattr(module, a)}' for a in
             ('in_channels', 'out_channels', 'student_channels')
             if isinstance(getattr(module, a, None), int)]
    if sizes:
        what += f' ({", ".join(sizes)})'
    text, advice = str(err), []
    if stage == 'connector' and isinstance(raw, torch.Tensor) and \
            raw.dim() != 4 and type(connector).__name__ not in \
            TOKEN_CONNECTORS:
        advice.append(
            f'The student tap gives {kind_of(raw)}; {type(connector).__name__}'
            ' takes maps (N, C, H, W). For tokens or vectors use '
            f"{pair.config_path('connector')}=dict(type='TokenProjector', "
            f'in_channels={channels_of(raw)}, out_channels=...), or tap '
            'layers that give maps on both sides.')
    elif stage == 'connector':
        want = getattr(connector, 'in_channels', None)
        have = channels_of(raw)
        if isinstance(want, int) and have is not None and want != have:
            advice.append(
                f'The student tap has {have} channels: set '
                f'{pair.config_path("connector")}.in_channels={have}.')
    else:
        advice = shape_advice(pair, connector, student, teacher, loss)
    marker = f'{shape_of(teacher)}: '
    replaced = stage == 'loss' and bool(advice) and marker in text
    if replaced:
        # the loss's own fix ("add a connector") is replaced by what fits
        # this pair
        text = text[:text.rindex(marker) + len(marker) - 2]
    lines = [
        f'Distillation {pair}: the {stage} {what} failed on the student '
        f'tap of shape {shape_of(raw)}'
        + (f' ({shape_of(student)} after the connector)'
           if student is not None and student is not raw else '')
        + f' and the teacher tap of shape {shape_of(teacher)}: '
        + text.rstrip('.') + '.'
    ] + advice + list(notes)
    exc = type(err)('\n'.join(lines))
    exc.__cause__ = None if replaced else err
    exc.__suppress_context__ = True
    return exc


def denoising_note(pair: Pair, model: nn.Module, student,
                   teacher) -> List[str]:
    """Why a DETR student's decoder gives more queries than its teacher's:
    in training, DINO-style detectors (a ``dn_query_generator``) put the
    denoising queries of ``dn_cfg`` ahead of the object queries, which the
    teacher, in eval mode, runs alone."""
    if not (getattr(model, 'dn_query_generator', None) is not None
            and model.training and 'decoder' in pair.student.path
            and isinstance(student, torch.Tensor)
            and isinstance(teacher, torch.Tensor) and student.dim() == 3
            and teacher.dim() == 3 and student.shape[1] != teacher.shape[1]):
        return []
    queries = getattr(model, 'num_queries', None)
    extra = student.shape[1] - (queries if isinstance(queries, int)
                                else teacher.shape[1])
    if extra <= 0:
        return []
    return [
        f'The {extra} extra student tokens are the denoising queries '
        f'{type(model).__name__} adds in training ({pair.student.path} runs '
        "them ahead of the object queries; their number follows dn_cfg and "
        "each batch's boxes), which the teacher, in eval mode, does not "
        'run. Decoder queries cannot be paired in training: tap the '
        "encoder (e.g. 'encoder.layers.5', the image tokens) or the neck "
        'on both sides instead.']


def shape_advice(pair: Pair, connector: Optional[nn.Module], student,
                 teacher, loss: Optional[nn.Module] = None) -> List[str]:
    """What to change when the loss got features it cannot compare (a loss
    with its own channel alignment, FGD's ``student_channels`` and
    ``in_channels``, is told to set those; a loss that compares no maps,
    ``compares_maps = False``, gets no advice here)."""
    if not all(isinstance(x, torch.Tensor) for x in (student, teacher)):
        return []
    if not getattr(loss, 'compares_maps', True):
        return []
    if student.dim() != teacher.dim():
        return [
            f'The student gives {kind_of(student)} and the teacher tap '
            f'{kind_of(teacher)}: {type(loss).__name__} compares features '
            'of one kind. Tap layers of the same kind on both sides (a '
            "ViT's tokens against a CNN's maps need a layer that turns one "
            'into the other; the logits, with KDLoss, DKDLoss or DISTLoss, '
            'compare any two classifiers of the same classes).']
    if student.dim() < 3:
        return []
    out = []
    if student.dim() == 3 and student.shape[1] != teacher.shape[1]:
        out.append(
            f'The token counts differ (student {student.shape[1]}, teacher '
            f'{teacher.shape[1]}): tap layers that give as many tokens on '
            f'both sides; change the student tap '
            f'{pair.student.config_text()} or the teacher tap '
            f'{pair.teacher.config_text()} (ViTs give as many patch tokens '
            'for the same patch size and input size; a class or '
            'distillation token counts as one more).')
    s_size, t_size = tuple(student.shape[2:]), tuple(teacher.shape[2:])
    if student.dim() == 4 and s_size != t_size:
        if connector is not None:
            change = (f"set {pair.config_path('connector')}.resize="
                      "dict(mode='bilinear') (or 'nearest', 'pool') to "
                      f"bring the student to the teacher's size")
        else:
            change = (f"add {pair.config_path('connector')}=dict(type="
                      "'IdentityConnector', resize=dict(mode='bilinear')) "
                      "to bring the student to the teacher's size")
        out.append(
            f'The spatial sizes differ (student {s_size}, teacher '
            f'{t_size}): {change}; or tap layers with the same output size: '
            f'change the student tap {pair.student.config_text()} or the '
            f'teacher tap {pair.teacher.config_text()} (e.g. the same stage '
            'or FPN level on both sides).')
    if not getattr(loss, 'same_channels', True):
        return out  # the loss compares across channel counts
    s_channels, t_channels = channels_of(student), channels_of(teacher)
    aligns = {attr: getattr(loss, attr, None)
              for attr in ('student_channels', 'in_channels')}
    if connector is None and all(isinstance(v, int)
                                 for v in aligns.values()):
        # the loss aligns the student's channels to the teacher's itself
        fixes = [f'{pair.config_path("loss")}.{attr}={have}'
                 for attr, have in (('student_channels', s_channels),
                                    ('in_channels', t_channels))
                 if have is not None and aligns[attr] != have]
        if fixes:
            out.append(
                f'The student tap has {s_channels} channels and the teacher '
                f'tap {t_channels}; {type(loss).__name__} aligns them itself: '
                f'set {" and ".join(fixes)}.')
    elif s_channels != t_channels:
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
                f".out_channels={t_channels} (or 'auto').")
    return out


def weight_fix(pair: Pair, loss: nn.Module) -> str:
    """How to lower a pair's weight, naming its config key."""
    path = pair.config_path('loss')
    weights = [(a, getattr(loss, a)) for a in
               ('loss_weight', 'alpha', 'beta', 'gamma', 'lambda_')
               if isinstance(getattr(loss, a, None), (int, float))]
    if not weights:
        return f'Lower the weight of {path} ({type(loss).__name__})'
    if weights[0][0] == 'loss_weight':
        return f'Lower {path}.loss_weight (now {weights[0][1]:g})'
    now = ', '.join(f'{a}={v:g}' for a, v in weights)
    return f'Lower the weights of {path} (now {now})'
