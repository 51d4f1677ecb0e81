"""Find the layers of a model worth distilling, from its module tree and one
dummy forward.

:func:`probe_model` builds a model from its config with random weights
(nothing downloaded), feeds one random batch of its task through its data
preprocessor and its ``tensor`` forward with a forward hook on every module,
and returns the candidate taps:

* ``stage``: the backbone's stages: the modules whose outputs the backbone
  returns (``backbone[i]``), and the last direct child of the backbone at
  each new stride;
* ``level``: the neck's outputs (FPN levels), by the module that computes
  each (``neck.fpn_convs.0.conv``) or by index (``neck[4]``, e.g. a level
  FPN max-pools without a module);
* ``head``: the last convolution / linear layer of each head whose output
  the head returns (``decode_head.conv_seg``, ``head.fc``,
  ``bbox_head.retina_cls`` called once per FPN level).

Each candidate carries its output shape, stride (input size / output size)
and channels. Modules are matched to the outputs of the backbone, neck and
heads by tensor identity (weak references, so nothing is kept alive), which
needs no table of model types.
"""
import weakref
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn

from mmdistill.utils.config import model_config, student_source

#: roles of the candidates
STAGE, LEVEL, HEAD = 'stage', 'level', 'head'
_LEAVES = (nn.modules.conv._ConvNd, nn.Linear)


@dataclass
class Candidate:
    """One tap of a model that could be distilled.

    Attributes:
        path (str): Module path (``'neck.fpn_convs.0.conv'``), or the
            component when the tap is by index (``'neck'``).
        role (str): ``'stage'``, ``'level'`` or ``'head'``.
        shape (tuple): Output shape for the dummy batch.
        stride (int | tuple | None): Input size / output size (an int when
            both sides agree; None for outputs without a spatial map).
        index (int, optional): Position in the output of the backbone or
            neck (``backbone[index]``), or of the flattened head output.
        calls (list[int]): Which calls of the module give this output (a
            head shared by the FPN levels runs once per level).
        by_index (bool): The tap reads ``path[index]`` (no module computes
            the tensor alone).
        inplace (bool): The model changes the output in place later: tap
            with ``clone=True``.
        order (int): Position in the forward's execution order.
        call_strides (list): The stride of each call, for a module called
            several times (a head shared by the FPN levels).
        note (str, optional): How the tap relates to what the model
            returns, when it is not that tensor itself (a Cascade R-CNN's
            last-stage classifier, whose scores the head averages over its
            stages).
    """
    path: str
    role: str
    shape: Tuple[int, ...]
    stride: Union[int, Tuple[float, float], None]
    index: Optional[int] = None
    calls: List[int] = field(default_factory=lambda: [0])
    by_index: bool = False
    inplace: bool = False
    order: int = 0
    call_strides: List[Any] = field(default_factory=list)
    note: Optional[str] = None

    @property
    def channels(self) -> Optional[int]:
        """Channels: dim 1 of (N, C, ...), the last dim of (N, L, C)."""
        if len(self.shape) < 2:
            return None
        return int(self.shape[-1] if len(self.shape) == 3 else self.shape[1])

    @property
    def spatial(self) -> Optional[Tuple[int, int]]:
        return tuple(self.shape[2:]) if len(self.shape) == 4 else None

    def tap(self, call: Optional[int] = None) -> Union[str, dict]:
        """The tap as a distillation config writes it."""
        text = f'{self.path}[{self.index}]' if self.by_index else self.path
        call = self.calls[0] if call is None else call
        if call or self.inplace:
            spec = dict(path=text)
            if call:
                spec['call'] = call
            if self.inplace:
                spec['clone'] = True
            return spec
        return text

    def describe_tap(self) -> str:
        text = f'{self.path}[{self.index}]' if self.by_index else self.path
        if len(self.calls) > 1:
            text += f' (calls {self.calls[0]}-{self.calls[-1]})'
        elif self.calls[0]:
            text += f' (call {self.calls[0]})'
        return text

    def to_dict(self) -> dict:
        return dict(
            tap=self.tap(), path=self.path, role=self.role,
            shape=list(self.shape),
            stride=list(self.stride) if isinstance(self.stride, tuple)
            else self.stride,
            channels=self.channels, index=self.index, calls=self.calls,
            by_index=self.by_index, inplace=self.inplace,
            call_strides=[list(v) if isinstance(v, tuple) else v
                          for v in self.call_strides],
            note=self.note)


@dataclass
class Probe:
    """What :func:`probe_model` found.

    Attributes:
        config (str): The config it was built from.
        kind (str): ``'det'``, ``'seg'`` or ``'cls'``.
        model_type (str): Class name of the model.
        input_shape (tuple): Shape of the preprocessed dummy input.
        candidates (list[Candidate]): In execution order.
        components (dict): Top-level component -> class name.
        model (nn.Module): The built model (random weights, eval mode).
        scope (str, optional): The config's default scope.
        profile (dict): What picks the closest shipped config: model
            names, training crop and schedule (:func:`profile_of`).
        unlisted (list[str]): Components whose outputs no module computes
            (nothing of them can be tapped).
    """
    config: str
    kind: str
    model_type: str
    input_shape: Tuple[int, ...]
    candidates: List[Candidate]
    components: Dict[str, str]
    model: Any = None
    scope: Optional[str] = None
    profile: Dict[str, Any] = field(default_factory=dict)
    unlisted: List[str] = field(default_factory=list)

    def by_role(self, role: str) -> List[Candidate]:
        return [c for c in self.candidates if c.role == role]

    @property
    def two_stage(self) -> bool:
        """An mmdet detector with an RoI head (Faster R-CNN, Cascade)."""
        return 'roi_head' in self.components

    def to_dict(self) -> dict:
        return dict(config=self.config, kind=self.kind,
                    model_type=self.model_type,
                    input_shape=list(self.input_shape),
                    components=self.components,
                    candidates=[c.to_dict() for c in self.candidates],
                    profile=self.profile, unlisted=self.unlisted)


class ProbeError(ValueError):
    """A config the probe cannot take (the message says why and what to
    give instead)."""


# ---------------------------------------------------------------- building
def is_distiller(cfg) -> bool:
    """Whether the model of ``cfg`` is a distiller (``model.student`` and
    ``model.teacher``) rather than a model of its own."""
    model = cfg.get('model', None)
    return isinstance(model, dict) and 'student' in model and \
        'teacher' in model


def check_not_distiller(cfg, path: str = 'the config',
                        role: Optional[str] = None) -> None:
    """Stop on a distillation config given where a model config belongs.

    Args:
        cfg (Config): The loaded config.
        path (str): Its path, for the message.
        role (str, optional): ``'student'`` or ``'teacher'``: which model
            the config was given for.

    Raises:
        ProbeError: ``cfg``'s model is a distiller; the message names the
            student's (or teacher's) own config when it can tell it.
    """
    if not is_distiller(cfg):
        return
    model = cfg.model
    teacher = model.teacher
    teacher_config = teacher.get('config') if isinstance(teacher, dict) \
        else None
    hints = []
    if role in (None, 'student'):
        source = student_source(path, model.student)
        if source:
            hints.append(f'its student comes from {source}')
    if role in (None, 'teacher') and isinstance(teacher_config, str):
        hints.append('its teacher config, model.teacher.config, is '
                     f'{teacher_config}')
    whose = f"the {role}'s" if role else 'the student\'s or teacher\'s'
    raise ProbeError(
        f'{path} is a distillation config (its model is a '
        f'{model.get("type", "distiller")} with model.student and '
        f'model.teacher): give {whose} own model config instead'
        + (f' ({"; ".join(hints)})' if hints else '') + '.')


def model_names(model: dict) -> Dict[str, Any]:
    """The names that tell two model configs apart: the model type, the
    types of its components and the backbone's depth / architecture."""
    names: Dict[str, Any] = dict(type=model.get('type'))
    for key, part in model.items():
        if isinstance(part, dict) and 'type' in part:
            names[key] = part['type']
        elif isinstance(part, (list, tuple)) and part and all(
                isinstance(p, dict) for p in part):
            names[key] = tuple(p.get('type') for p in part)
    backbone = model.get('backbone')
    if isinstance(backbone, dict):
        for key in ('depth', 'arch', 'widen_factor'):
            if key in backbone:
                names[f'backbone.{key}'] = backbone[key]
    names.pop('data_preprocessor', None)
    return names


def loss_types(model: dict) -> Tuple[str, ...]:
    """The types of the losses a model config trains with (every ``loss*``
    key of its parts, e.g. ``('FocalLoss', 'L1Loss')`` for RetinaNet),
    sorted, without registry scopes."""
    found = set()

    def visit(node, key=''):
        if isinstance(node, dict):
            if key.startswith('loss') and isinstance(node.get('type'), str):
                found.add(node['type'].split('.')[-1])
            for k, v in node.items():
                visit(v, k if isinstance(k, str) else '')
        elif isinstance(node, (list, tuple)):
            for v in node:
                visit(v, key)

    visit(model)
    return tuple(sorted(found))


def _pair_of(value) -> Optional[Tuple[int, int]]:
    if isinstance(value, int) and not isinstance(value, bool):
        return (value, value)
    if isinstance(value, (list, tuple)) and len(value) == 2 and all(
            isinstance(v, int) for v in value):
        return tuple(value)
    return None


def _pipeline_crop(node) -> Optional[Tuple[int, int]]:
    """The ``crop_size`` of the first transform with one (``RandomCrop``)
    in a (nested) dataloader config."""
    if isinstance(node, dict):
        if 'crop' in str(node.get('type', '')).lower() and \
                _pair_of(node.get('crop_size')):
            return _pair_of(node.get('crop_size'))
        values = node.values()
    elif isinstance(node, (list, tuple)):
        values = node
    else:
        return None
    for value in values:
        found = _pipeline_crop(value)
        if found is not None:
            return found
    return None


def profile_of(cfg, model: Optional[dict] = None) -> Dict[str, Any]:
    """What picks the closest shipped config for a model config.

    Args:
        cfg (Config): A loaded config.
        model (dict, optional): Its model config (default ``cfg.model``;
            a distillation config's ``model.student``).

    Returns:
        dict: ``names`` (:func:`model_names`), ``crop`` (the training
        crop (H, W): the ``crop_size`` of the training pipeline's crop,
        else the data preprocessor's ``size``, else the config's
        ``crop_size``; None when none says) and ``schedule``
        (``('iters', n)`` or ``('epochs', n)`` of ``train_cfg``; None when
        it says neither) and ``losses`` (:func:`loss_types`).
    """
    model = cfg.get('model', None) if model is None else model
    model = model if isinstance(model, dict) else {}
    crop = _pipeline_crop(cfg.get('train_dataloader', None))
    for pre in (model.get('data_preprocessor'),
                cfg.get('data_preprocessor', None)):
        if crop is None and isinstance(pre, dict):
            crop = _pair_of(pre.get('size'))
    if crop is None:
        crop = _pair_of(cfg.get('crop_size', None))
    train_cfg = cfg.get('train_cfg', None) or {}
    schedule = None
    for key in ('max_iters', 'max_epochs'):
        if isinstance(train_cfg, dict) and train_cfg.get(key):
            schedule = (key[4:], train_cfg[key])
            break
    return dict(names=model_names(model), crop=crop, schedule=schedule,
                losses=loss_types(model))


def strip_pretrained(node: Any) -> Any:
    """Remove ``pretrained=`` and ``init_cfg`` ``Pretrained`` entries from a
    model config in place (they name weights to download)."""
    if isinstance(node, dict):
        if 'pretrained' in node:
            node['pretrained'] = None
        init = node.get('init_cfg')
        if isinstance(init, dict) and init.get('type') == 'Pretrained':
            node['init_cfg'] = None
        elif isinstance(init, (list, tuple)):
            node['init_cfg'] = [
                i for i in init
                if not (isinstance(i, dict) and i.get('type') == 'Pretrained')
            ] or None
        for value in node.values():
            strip_pretrained(value)
    elif isinstance(node, (list, tuple)):
        for value in node:
            strip_pretrained(value)
    return node


#: proposals a two-stage detector keeps in the probe (its RoI heads run
#: once per proposal; their output shapes do not depend on the count)
PROBE_PROPOSALS = 16


def fewer_proposals(model_cfg: dict) -> dict:
    """Cap the proposals of an mmdet RPN's test settings in place (a
    Cascade Mask R-CNN's heads on 1000 random proposals take seconds)."""
    test_cfg = model_cfg.get('test_cfg') or {}
    rpn = test_cfg.get('rpn') if isinstance(test_cfg, dict) else None
    if isinstance(rpn, dict):
        for key, cap in (('max_per_img', PROBE_PROPOSALS),
                         ('nms_pre', 4 * PROBE_PROPOSALS)):
            if isinstance(rpn.get(key), int):
                rpn[key] = min(rpn[key], cap)
    return model_cfg


def build_random(cfg) -> nn.Module:
    """Build the model of ``cfg`` in its own registry scope with random
    weights: ``init_weights`` is not called and pretrained entries are
    stripped, so nothing is downloaded. A two-stage detector keeps
    :data:`PROBE_PROPOSALS` proposals."""
    from mmengine.registry import MODELS, DefaultScope
    scope = cfg.get('default_scope', None)
    model_cfg = fewer_proposals(strip_pretrained(model_config(cfg)))
    with DefaultScope.overwrite_default_scope(scope):
        model = MODELS.build(model_cfg)
    return model.eval()


def kind_of(cfg, path: str = 'the config') -> str:
    """``'det'``, ``'seg'`` or ``'cls'`` from the config's default scope."""
    from mmdistill.testing.batches import KIND_OF_SCOPE
    scope = cfg.get('default_scope', None)
    if scope not in KIND_OF_SCOPE:
        raise ProbeError(
            f'{path} has default_scope {scope!r}; suggest_pairs knows the '
            f'tasks of {sorted(KIND_OF_SCOPE)} (mmdet detectors, mmseg '
            'segmentors, mmpretrain classifiers).')
    return KIND_OF_SCOPE[scope]


def num_classes_of(model: nn.Module) -> int:
    """The first ``num_classes`` of a head (0 when none says)."""
    for name, module in model.named_modules():
        value = getattr(module, 'num_classes', None)
        if name and isinstance(value, int) and value > 0:
            return value
    return 0


# ----------------------------------------------------------------- probing
def _tensors(value) -> List[torch.Tensor]:
    """The tensors of a (nested) output, in order."""
    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, (list, tuple)):
        return [t for v in value for t in _tensors(v)]
    if isinstance(value, dict):
        return [t for v in value.values() for t in _tensors(v)]
    return []


def _stride(input_hw: Sequence[int], shape: Sequence[int]):
    if len(shape) != 4:
        return None
    ratios = [input_hw[i] / shape[2 + i] for i in range(2)]
    if all(r == int(r) for r in ratios) and ratios[0] == ratios[1]:
        return int(ratios[0])
    return tuple(round(r, 2) for r in ratios)


@dataclass
class _Call:
    name: str
    call: int
    order: int
    ref: Any  # weakref to the output tensor (None for other outputs)
    shape: Optional[Tuple[int, ...]]
    version: int = 0


class _Recorder:
    """Forward hooks on every module: what each call returned (shape, a
    weak reference, its in-place version)."""

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self.calls: List[_Call] = []
        self.counts: Dict[str, int] = {}
        self.outputs: Dict[str, Any] = {}  # top-level components (strong)

    def __enter__(self):
        self.handles = []
        self.patched = []
        for name, module in self.model.named_modules():
            if name:
                self.handles.append(
                    module.register_forward_hook(self._hook(name)))
        # Models call some components' forward() directly (mmdet's
        # bbox_head.forward(x), mmseg's decode_head.forward(x)), which skips
        # hooks: their outputs are taken from forward itself.
        for name, module in self.model.named_children():
            own = module.__dict__.get('forward')
            module.forward = self._keep(name, module.forward)
            self.patched.append((module, own))
        return self

    def __exit__(self, *exc):
        for handle in self.handles:
            handle.remove()
        for module, own in self.patched:
            if own is None:
                del module.forward
            else:
                module.forward = own

    def _keep(self, name: str, forward):

        def wrapped(*args, **kwargs):
            output = forward(*args, **kwargs)
            self.outputs.setdefault(name, output)
            return output

        return wrapped

    def _hook(self, name: str):

        def hook(module, args, output):
            call = self.counts.get(name, 0)
            self.counts[name] = call + 1
            if isinstance(output, torch.Tensor):
                self.calls.append(_Call(name, call, len(self.calls),
                                        weakref.ref(output),
                                        tuple(output.shape),
                                        output._version))
            else:
                self.calls.append(_Call(name, call, len(self.calls), None,
                                        None))

        return hook


def _depth(name: str) -> int:
    return name.count('.')


def _producers(recorder: _Recorder, tensor: torch.Tensor,
               prefix: str) -> List[_Call]:
    """The calls inside ``prefix`` whose output is ``tensor`` itself."""
    return [c for c in recorder.calls
            if c.ref is not None and c.ref() is tensor
            and c.name.startswith(prefix + '.')]


def _pick(recorder: _Recorder, calls: List[_Call],
          modules: Dict[str, nn.Module], leaf: bool) -> Optional[_Call]:
    """The module to name for a tensor: the shallowest module called once
    (a stage ``backbone.layer4`` rather than its last block), then down to
    a conv/linear child giving the same tensor (``fpn_convs.0.conv``); with
    ``leaf``, the deepest conv/linear (a head's classifier)."""
    if not calls:
        return None
    if leaf:
        leaves = [c for c in calls if isinstance(modules[c.name], _LEAVES)]
        if leaves:
            return max(leaves, key=lambda c: _depth(c.name))
    once = [c for c in calls if recorder.counts[c.name] == 1]
    pool = once or calls
    best = min(pool, key=lambda c: (_depth(c.name), c.order))
    children = [c for c in calls if c.name.startswith(best.name + '.')
                and isinstance(modules[c.name], _LEAVES)
                and recorder.counts[c.name] == recorder.counts[best.name]]
    if children:
        return min(children, key=lambda c: _depth(c.name))
    return best


def probe_model(cfg, config: str = '', size: Optional[Sequence[int]] = None,
                model: Optional[nn.Module] = None,
                role: Optional[str] = None) -> Probe:
    """Build (unless given), run one dummy batch and list the candidate
    taps of the model of ``cfg``.

    Args:
        cfg (Config): The loaded config.
        config (str): Its path, for messages.
        size (tuple, optional): Input (H, W). Defaults to 256 x 256
            (detection, segmentation) or 224 x 224 (classification).
        model (nn.Module, optional): The model, if already built.
        role (str, optional): ``'student'`` or ``'teacher'``, for messages.

    Returns:
        Probe: The candidates in execution order.

    Raises:
        ProbeError: The config is a distillation config, or of a task the
            probe does not know.
    """
    from mmdistill.testing.batches import random_batch
    if model is None:
        check_not_distiller(cfg, config or 'the config', role)
    kind = kind_of(cfg, config)
    model = model if model is not None else build_random(cfg)
    model.eval()
    size = tuple(size or ((224, 224) if kind == 'cls' else (256, 256)))
    batch = random_batch(kind, size, 1, num_classes_of(model))
    with torch.no_grad():
        data = model.data_preprocessor(batch, False)
        inputs = data['inputs']
        with _Recorder(model) as recorder:
            model(inputs, data['data_samples'], mode='tensor')
    hw = tuple(inputs.shape[-2:])
    modules = dict(model.named_modules())
    components = {name: type(module).__name__
                  for name, module in model.named_children()
                  if name in recorder.outputs}
    found: List[Candidate] = []
    taken = set()

    def add(candidate: Candidate):
        key = (candidate.path, candidate.index if candidate.by_index
               else None, tuple(candidate.calls))
        if key not in taken:
            taken.add(key)
            found.append(candidate)

    def changed(call: _Call) -> bool:
        tensor = call.ref() if call.ref is not None else None
        return tensor is not None and tensor._version != call.version

    for comp, output in recorder.outputs.items():
        role = {'backbone': STAGE, 'neck': LEVEL}.get(comp, HEAD)
        tensors = _tensors(output)
        if role == HEAD:
            _head_candidates(recorder, comp, tensors, modules, hw, add,
                             int(inputs.shape[0]))
            continue
        for index, tensor in enumerate(tensors):
            if tensor.dim() not in (2, 3, 4):
                continue
            pick = _pick(recorder, _producers(recorder, tensor, comp),
                         modules, leaf=False)
            single = isinstance(output, torch.Tensor)
            order = next((c.order for c in recorder.calls
                          if c.name == comp), 0)
            if pick is None:
                add(Candidate(comp, role, tuple(tensor.shape),
                              _stride(hw, tensor.shape),
                              None if single else index,
                              by_index=not single, order=order))
            else:
                add(Candidate(pick.name, role, pick.shape,
                              _stride(hw, pick.shape), index,
                              calls=[pick.call], inplace=changed(pick),
                              order=pick.order))
        if role == STAGE:
            _stride_runs(recorder, comp, modules, hw, add, changed)
    found.sort(key=lambda c: c.order)
    scope = cfg.get('default_scope', None)
    listed = {c.path.split('.')[0] for c in found}
    unlisted = [comp for comp, output in recorder.outputs.items()
                if comp not in listed and _tensors(output)]
    return Probe(config, kind, type(model).__name__, tuple(inputs.shape),
                 found, components, model, scope, profile_of(cfg),
                 unlisted)


def _stride_runs(recorder, comp, modules, hw, add, changed) -> None:
    """The last direct child of the backbone at each stride (for a backbone
    that returns only its last stage, e.g. a classifier's)."""
    root = comp
    children = [n for n in modules if n.startswith(root + '.')
                and _depth(n) == _depth(root) + 1]
    with_params = [n for n in children
                   if any(True for _ in modules[n].parameters())]
    if len(with_params) == 1 and len(children) == 1:
        root = with_params[0]  # a wrapper (e.g. timm's model) around stages
        children = [n for n in modules if n.startswith(root + '.')
                    and _depth(n) == _depth(root) + 1]
    # a list of stages is never called itself (ConvNeXt's ``stages`` and
    # ``downsample_layers``): its items are the stages. Only lists named
    # so: HRNet's ``transition<i>`` lists hold parallel branch convs
    children = [item for child in children for item in (
        [n for n in modules if n.startswith(child + '.')
         and _depth(n) == _depth(child) + 1]
        if isinstance(modules[child], nn.ModuleList) and any(
            word in child.rsplit('.', 1)[-1]
            for word in ('stage', 'layer', 'block')) else [child])]
    runs = [c for c in recorder.calls
            if c.name in children and c.shape is not None
            and len(c.shape) == 4]
    for i, call in enumerate(runs):
        stride = _stride(hw, call.shape)
        last = i + 1 == len(runs) or _stride(hw, runs[i + 1].shape) != stride
        pooled = tuple(call.shape[2:]) == (1, 1)  # e.g. ConvNeXt's norm3
        if last and stride not in (None, 1) and not pooled and \
                recorder.counts[call.name] == 1:
            add(Candidate(call.name, STAGE, call.shape, stride,
                          calls=[call.call], inplace=changed(call),
                          order=call.order))


#: the listing's note on a head tap found by its shape
COMPUTED_FROM = 'the head returns a value computed from it'
#: and on a head output with one row per region of interest
PER_ROI = 'one row per region of interest'


def _same_shape_leaf(recorder, comp, tensor, modules) -> Optional[_Call]:
    """The last conv/linear call inside ``comp`` whose output has the
    shape of ``tensor`` (which the head computed from module outputs, e.g.
    a Cascade R-CNN's scores averaged over its stages)."""
    shape = tuple(tensor.shape)
    calls = [c for c in recorder.calls
             if c.name.startswith(comp + '.') and c.shape == shape
             and isinstance(modules[c.name], _LEAVES)]
    return max(calls, key=lambda c: c.order) if calls else None


def _head_candidates(recorder, comp, tensors, modules, hw, add,
                     batch: int) -> None:
    """A head's final conv/linear layers whose outputs it returns; a layer
    called once per FPN level becomes one candidate with all its calls.
    A returned tensor no module computes itself (the head averages or
    splits module outputs, as Cascade R-CNN's RoI head) is listed by the
    last conv/linear layer of its shape, with a note. Outputs without one
    row per image (``batch`` rows) have no stride; an RoI head's (one row
    per region of interest) get a note saying so."""

    def stride(shape):
        return _stride(hw, shape) if shape[0] == batch else None

    def note(shape, text=None):
        per_roi = shape[0] != batch and 'roi' in comp  # not DETR's layers
        return '; '.join(t for t in (PER_ROI if per_roi else None, text)
                         if t) or None

    picked: Dict[str, List[_Call]] = {}
    unmatched = []
    for tensor in tensors:
        pick = _pick(recorder, _producers(recorder, tensor, comp), modules,
                     leaf=True)
        if pick is not None and isinstance(modules[pick.name], _LEAVES):
            picked.setdefault(pick.name, []).append(pick)
        else:
            unmatched.append(tensor)
    if not picked and len(tensors) == 1:
        tensor = tensors[0]
        order = next((c.order for c in recorder.calls if c.name == comp), 0)
        add(Candidate(comp, HEAD, tuple(tensor.shape),
                      stride(tensor.shape), order=order,
                      note=note(tensor.shape)))
        return
    derived: Dict[str, _Call] = {}
    for tensor in unmatched:
        if tensor.dim() < 2:
            continue
        alike = _same_shape_leaf(recorder, comp, tensor, modules)
        if alike is not None and alike.name not in picked:
            derived[alike.name] = alike
    for name, call in derived.items():
        add(Candidate(name, HEAD, call.shape, stride(call.shape),
                      calls=[call.call], order=call.order,
                      call_strides=[stride(call.shape)],
                      note=note(call.shape, COMPUTED_FROM)))
    for name, calls in picked.items():
        calls.sort(key=lambda c: c.call)
        first = calls[0]
        add(Candidate(name, HEAD, first.shape, stride(first.shape),
                      calls=[c.call for c in calls], order=first.order,
                      call_strides=[stride(c.shape) for c in calls],
                      note=note(first.shape)))
