"""A cheaper teacher (issue 11 item 5): ``teacher.dtype`` runs it under
autocast, ``teacher.channels_last`` in that memory format; the student and
the losses see float32 as before."""
import copy

import pytest
import torch
from mmengine.registry import MODELS as ROOT_MODELS
from mmengine.registry import DefaultScope
from mmengine.runner import Runner

from mmdistill.registry import MODELS


def build(cfg, **teacher):
    cfg = copy.deepcopy(cfg)
    cfg.model.teacher.update(teacher)
    with DefaultScope.overwrite_default_scope(cfg.get('default_scope')):
        return ROOT_MODELS.build(cfg.model)


@MODELS.register_module(force=True)
class _SeenLoss(torch.nn.Module):
    """L2 that keeps what it was given."""

    def forward(self, student, teacher):
        self.seen = (student, teacher)
        return 1e-3 * (student - teacher).pow(2).sum() / student.shape[0]


@pytest.fixture
def pspnet(tiny_cfg):
    cfg = tiny_cfg('pspnet')[0]
    cfg.model.distill.stage4.loss = dict(type='_SeenLoss')
    return cfg


def batch(model, seed=0):
    from mmdistill.testing import random_batch
    return model.data_preprocessor(
        random_batch('seg', (64, 64), 2, 19, seed=seed), True)


def outputs_of(module):
    """Record a module's output dtype and its first input."""
    seen = {}
    module.register_forward_hook(
        lambda m, args, out: seen.update(out=out, inp=args[0]))
    return seen


def step(model, data):
    """Losses, and the student's gradients from its own losses and from
    all losses, of one training forward."""
    model.train()
    model.zero_grad()
    torch.manual_seed(0)  # the same dropout masks in both models
    losses = model(data['inputs'], data['data_samples'], mode='loss')
    params = [p for p in model.student.parameters() if p.requires_grad]
    own = sum(v for k, v in losses.items()
              if 'loss' in k and not k.startswith('loss_distill'))
    own_grads = torch.autograd.grad(own, params, retain_graph=True,
                                    allow_unused=True)
    total, _ = model.parse_losses(losses)
    total.backward()
    return losses, own_grads, [p.grad for p in params]


def test_bfloat16_teacher_close_to_float32_student_untouched(pspnet):
    reference = build(pspnet)
    cheap = build(pspnet, dtype='bfloat16')
    cheap.load_state_dict(reference.state_dict())
    inside = outputs_of(cheap.teacher.backbone.layer4)
    data = batch(reference)
    ref_losses, ref_own, ref_grads = step(reference, data)
    losses, own, grads = step(cheap, data)

    # the teacher ran in bfloat16; the loss got float32, contiguous
    assert inside['out'].dtype == torch.bfloat16
    student, teacher = cheap.distill_losses['stage4'].seen
    assert teacher.dtype == torch.float32 and teacher.is_contiguous()
    ref_teacher = reference.distill_losses['stage4'].seen[1]
    assert torch.allclose(teacher, ref_teacher, rtol=0.05, atol=0.05)
    assert not torch.equal(teacher, ref_teacher)  # it did run in bf16
    # the student trained in float32, untouched by the teacher's autocast:
    # its own losses and their gradients are bitwise those of before
    assert student.dtype == torch.float32
    for key, value in ref_losses.items():
        if not key.startswith('loss_distill'):
            assert torch.equal(losses[key], value), key
    for a, b in zip(own, ref_own):
        assert (a is None and b is None) or torch.equal(a, b)
    assert float(losses['loss_distill_stage4']) == pytest.approx(
        float(ref_losses['loss_distill_stage4']), rel=0.05)
    # with the distillation term: float32 gradients, close to before
    for a, b in zip(grads, ref_grads):
        assert a.dtype == torch.float32
        assert float((a - b).norm()) <= 0.05 * float(b.norm()) + 1e-12


def test_channels_last_teacher_same_values(pspnet):
    reference = build(pspnet)
    cheap = build(pspnet, channels_last=True)
    cheap.load_state_dict(reference.state_dict())
    conv = cheap.teacher.backbone.layer4[0].conv1
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    first = cheap.teacher.backbone.stem[0]
    inside = outputs_of(first)
    data = batch(reference)
    ref_losses = step(reference, data)[0]
    losses = step(cheap, data)[0]
    assert inside['inp'].is_contiguous(memory_format=torch.channels_last)
    teacher = cheap.distill_losses['stage4'].seen[1]
    assert teacher.is_contiguous()
    assert torch.allclose(teacher,
                          reference.distill_losses['stage4'].seen[1],
                          rtol=1e-4, atol=1e-5)
    assert float(losses['loss_distill_stage4']) == pytest.approx(
        float(ref_losses['loss_distill_stage4']), rel=1e-4)


def test_float32_teacher_under_a_student_autocast(pspnet):
    """dtype='float32' keeps the teacher out of the student's AMP."""
    model = build(pspnet, dtype='float32')
    inside = outputs_of(model.teacher.backbone.layer4)
    student_out = outputs_of(model.student.backbone.layer4)
    data = batch(model)
    model.train()
    with torch.autocast('cpu', dtype=torch.bfloat16):
        model(data['inputs'], data['data_samples'], mode='loss')
    assert student_out['out'].dtype == torch.bfloat16
    assert inside['out'].dtype == torch.float32


def test_unknown_dtype_and_unsupported_float16(pspnet):
    with pytest.raises(ValueError, match=r"teacher.dtype must be one of "
                       r"\['bfloat16', 'float16', 'float32'\], got 'half'"):
        build(pspnet, dtype='half')
    with pytest.raises(ValueError, match='teacher takes config'):
        build(pspnet, precision='bfloat16')

    # does this torch autocast a CPU conv to float16? (torch 2.1 does not)
    try:
        with torch.autocast('cpu', dtype=torch.float16):
            supported = torch.nn.Conv2d(3, 3, 1)(
                torch.ones(1, 3, 2, 2)).dtype == torch.float16
    except RuntimeError:  # torch 2.1: 'AutocastCPU only support Bfloat16'
        supported = False
    if not supported:
        with pytest.raises(ValueError, match="teacher.dtype='float16' is "
                           'not supported on cpu'):
            build(pspnet, dtype='float16')
        return
    model = build(pspnet, dtype='float16')
    inside = outputs_of(model.teacher.backbone.layer4)
    step(model, batch(model))
    assert inside['out'].dtype == torch.float16
    assert model.distill_losses['stage4'].seen[1].dtype == torch.float32


def test_trains_in_the_runner(tiny_cfg):
    cfg = tiny_cfg('pspnet')[0]
    cfg.model.teacher.update(dtype='bfloat16', channels_last=True)
    cfg.visualizer.name = f'teacher_dtype_{id(cfg)}'
    runner = Runner.from_cfg(cfg)
    runner.train()
    assert runner.iter == cfg.train_cfg.max_iters
    scalars = runner.message_hub.log_scalars
    assert 'train/loss_distill_stage4' in scalars


def weight_bytes(modules):
    return sum(p.numel() * p.element_size() for m in modules
               for p in m.parameters(recurse=False))


def test_half_teacher_keeps_its_layer_weights_in_its_dtype(pspnet):
    """From the first forward on, the teacher's convolutions hold bfloat16
    weights: bitwise the features autocast gives with float32 weights
    (which it casts at every call), half those weights' memory; norms stay
    float32."""
    from mmdistill.distillers.taps import FeatureRecorder
    from mmdistill.distillers.teacher import TeacherRunner
    model = build(pspnet, dtype='bfloat16')
    twin = copy.deepcopy(model.teacher)
    reference = TeacherRunner(
        twin, FeatureRecorder(twin, model.teacher_recorder.taps, 'teacher'))
    convs = [m for m in model.teacher.modules()
             if isinstance(m, torch.nn.Conv2d)]
    norm = model.teacher.backbone.layer4[0].bn1
    conv_bytes, total = weight_bytes(convs), weight_bytes(
        model.teacher.modules())
    # nothing is cast before the first forward (init_student_from_teacher
    # and TeacherCheckHook read float32 weights)
    assert convs[0].weight.dtype == torch.float32
    for seed in (0, 1):  # the casting forward, then a later one
        data = batch(model, seed)
        features = model.teacher_features(data['inputs'],
                                          data['data_samples'])
        with torch.autocast('cpu', dtype=torch.bfloat16):
            expected = reference.features(data['inputs'],
                                          data['data_samples'])
        assert set(features) == set(expected)
        for name, value in features.items():
            assert expected[name].dtype == torch.bfloat16
            assert value.dtype == torch.float32
            assert torch.equal(value, expected[name].float()), name
    assert all(m.weight.dtype == torch.bfloat16 for m in convs)
    assert norm.weight.dtype == norm.running_var.dtype == torch.float32
    assert weight_bytes(model.teacher.modules()) == total - conv_bytes // 2
    assert twin.backbone.layer4[0].conv1.weight.dtype == torch.float32


def test_half_teacher_weights_stay_float32_if_a_layer_skips_autocast(
        pspnet):
    """A teacher layer that runs outside autocast cannot take bfloat16
    weights: they go back to float32, with a warning, and the teacher runs
    as before."""
    model = build(pspnet, dtype='bfloat16')
    conv = model.teacher.backbone.layer4[0].conv1
    plain = conv.forward

    def outside_autocast(x):
        with torch.autocast('cpu', enabled=False):
            return plain(x.float())

    conv.forward = outside_autocast
    data = batch(model)
    with pytest.warns(UserWarning, match='they stay float32 and autocast '
                      'casts them at every step'):
        first = model.teacher_features(data['inputs'], data['data_samples'])
    assert all(p.dtype == torch.float32
               for p in model.teacher.parameters())
    again = model.teacher_features(data['inputs'], data['data_samples'])
    for name, value in first.items():
        assert torch.equal(value, again[name])


def test_pairs_on_one_teacher_layer_get_one_converted_tensor(pspnet):
    """The teacher's float32 copy of a tapped layer is made once: pairs
    tapping that layer get the same tensor, as without teacher.dtype (TaT's
    pairs share embeddings only for the same teacher data)."""
    pspnet.model.distill.again = copy.deepcopy(pspnet.model.distill.stage4)
    model = build(pspnet, dtype='bfloat16')
    data = batch(model)
    features = model.teacher_features(data['inputs'], data['data_samples'])
    assert features['stage4'].dtype == torch.float32
    assert features['stage4'] is features['again']


def test_auto_channels_dry_run_leaves_the_teacher_float32(pspnet):
    """``'auto'`` channels run the teacher once while the distiller is
    built; that dry run does not cast its weights, so what reads them
    before training gets float32: ``init_student_from_teacher`` copies the
    checkpoint's values, and the teacher predicts without autocast (as
    ``TeacherCheckHook`` runs it)."""
    cfg = copy.deepcopy(pspnet)
    cfg.model.distill.stage4.connector.in_channels = 'auto'
    cfg.model.distill.stage4.connector.out_channels = 'auto'
    model = build(cfg, dtype='bfloat16')
    assert model.teacher_runner.cast_pending
    assert all(p.dtype == torch.float32 for p in model.teacher.parameters())
    data = batch(model)
    with torch.no_grad():
        model.teacher(data['inputs'], data['data_samples'], mode='predict')
    model.teacher_features(data['inputs'], data['data_samples'])
    conv = model.teacher.backbone.layer4[0].conv1
    assert conv.weight.dtype == torch.bfloat16
