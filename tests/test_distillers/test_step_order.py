"""The order of a distillation step, for its peak memory: the teacher runs
before the student, and each pair's connector and loss run as soon as the
student's tap is recorded, so that

* the teacher's working memory is freed before the student's activations
  build up (only its tapped features are held at the step's peak);
* a pair's backward comes after that of the student's layers past its tap,
  whose activations are then freed.

Checked on a shipped config with its real models shrunk; the memory it
saves is measured by ``tools/analysis/benchmark_overhead.py`` (README, "Cost
per method").
"""
import copy
import weakref

import pytest
import torch
from mmengine.registry import MODELS as ROOT_MODELS
from mmengine.registry import DefaultScope

from mmdistill.analysis.memory import tensor_bytes
from mmdistill.distillers import single_teacher
from mmdistill.testing import random_batch


def build(cfg, model_cfg):
    with DefaultScope.overwrite_default_scope(cfg.get('default_scope')):
        return ROOT_MODELS.build(copy.deepcopy(model_cfg))


def test_teacher_done_and_freed_before_the_student_starts(tiny_cfg):
    """When the student's first layer runs, the teacher has run to its tap
    and of the tensors its layers made only the tapped features are
    alive."""
    cfg = tiny_cfg('pspnet')[0]
    distiller = build(cfg, cfg.model)
    made, alive_at_start = [], []

    def keep_ref(module, args, output):
        if isinstance(output, torch.Tensor):
            made.append(weakref.ref(output))

    for module in distiller.teacher.modules():
        module.register_forward_hook(keep_ref)
    tapped = []
    distiller.teacher.backbone.layer4.register_forward_hook(
        lambda module, args, output: tapped.append(weakref.ref(output)))

    def at_start(module, args):
        alive_at_start.append([ref() for ref in made
                               if ref() is not None])

    first = next(m for m in distiller.student.backbone.modules()
                 if isinstance(m, torch.nn.Conv2d))
    first.register_forward_pre_hook(at_start)
    distiller.train()
    data = distiller.data_preprocessor(
        random_batch('seg', (64, 64), 2, 19, seed=0), True)
    distiller(data['inputs'], data['data_samples'], mode='loss')
    assert len(made) > 20  # the teacher ran before the student
    # what is left: the tapped layer4 output (its last block and ReLU
    # return the same tensor), nothing else of the teacher's forward
    storages = {t.untyped_storage().data_ptr() for t in alive_at_start[0]}
    assert storages == {tapped[0]().untyped_storage().data_ptr()}


def test_pair_backward_after_the_students_layers_past_its_tap(tiny_cfg):
    """The gradient of the student's decode head output is computed before
    the pair's connector output gets its gradient (the autograd engine runs
    the most recently created nodes first; the pair's nodes are created
    inside the student's forward, before the head's)."""
    cfg = tiny_cfg('pspnet')[0]
    distiller = build(cfg, cfg.model)
    order = []

    def on_grad(name):
        def hook(module, args, output):
            out = output[0] if isinstance(output, (tuple, list)) else output
            out.register_hook(lambda grad: order.append(name))
        return hook

    distiller.student.decode_head.conv_seg.register_forward_hook(
        on_grad('head'))
    distiller.connectors['stage4'].register_forward_hook(on_grad('pair'))
    distiller.train()
    data = distiller.data_preprocessor(
        random_batch('seg', (64, 64), 2, 19, seed=0), True)
    losses = distiller(data['inputs'], data['data_samples'], mode='loss')
    total, _ = distiller.parse_losses(losses)
    total.backward()
    assert order == ['head', 'pair']


def tat_pairs(with_cp):
    """TaT's anchor and patch-group pairs on layer4 (one set of
    embeddings), the anchor pair recomputed in the backward or not."""
    connector = dict(type='TaTConnector', in_channels='auto',
                     out_channels='auto', patch_grid=(2, 2), num_groups=2)
    return dict(
        anchor=dict(
            student='backbone.layer4', teacher='backbone.layer4',
            connector=dict(connector, mode='anchor', anchor_size=(2, 2),
                           anchor_output='anchor'),
            loss=dict(type='MSELoss', loss_weight=0.04), with_cp=with_cp),
        patch_group=dict(
            student='backbone.layer4', teacher='backbone.layer4',
            connector=dict(connector, mode='patch_group',
                           embeddings_from='anchor'),
            loss=dict(type='MSELoss', loss_weight=0.1)))


def test_with_cp_pairs_same_values_gradients_and_statistics(
        tiny_cfg, monkeypatch):
    """``with_cp=True`` on a pair (here TaT's anchor pair, which the
    patch-group pair takes its embeddings from, so both are run again
    together): the same losses, gradients and norm statistics, and the
    connectors' intermediate maps are not kept for the backward."""
    cfg = tiny_cfg('pspnet')[0]
    models = []
    for with_cp in (False, True):
        cfg.model.distill = tat_pairs(with_cp)
        torch.manual_seed(0)
        models.append(build(cfg, cfg.model))
    plain, recomputed = models
    recomputed.load_state_dict(plain.state_dict())
    data = plain.data_preprocessor(
        random_batch('seg', (64, 64), 2, 19, seed=0), True)
    results = []
    pack = single_teacher._pack_in_pair
    for model in models:
        model.train()
        saved = []

        def keep(x):
            saved.append(x)
            return pack(x)

        # what the pairs keep for the backward (the student's tensors are
        # the same in both)
        monkeypatch.setattr(single_teacher, '_pack_in_pair', keep)
        torch.manual_seed(0)
        losses = model(data['inputs'], data['data_samples'], mode='loss')
        total, _ = model.parse_losses(losses)
        total.backward()
        results.append((losses, saved))
    (plain_losses, plain_saved), (cp_losses, cp_saved) = results
    for key in ('loss_distill_anchor', 'loss_distill_patch_group'):
        assert torch.equal(plain_losses[key], cp_losses[key]), key
    for (name, a), b in zip(plain.named_parameters(),
                            recomputed.parameters()):
        if a.grad is not None:
            torch.testing.assert_close(a.grad, b.grad, rtol=1e-5,
                                       atol=1e-7, msg=name)
    # the embeddings' norms were updated once, as without with_cp
    for a, b in zip(plain.connectors.buffers(),
                    recomputed.connectors.buffers()):
        assert torch.equal(a, b)
    # what the pairs keep for the backward: less by the TaT maps
    assert tensor_bytes(cp_saved) < tensor_bytes(plain_saved)


def student_checkpoints(monkeypatch, reentrant):
    """mmseg's ResNet blocks with ``with_cp=True`` checkpoint their inner
    forward through ``cp.checkpoint``, reentrant or not."""
    import functools

    import mmseg.models.backbones.resnet as resnet
    from torch.utils import checkpoint as cp
    monkeypatch.setattr(
        resnet, 'cp',
        type('cp', (), {'checkpoint': staticmethod(functools.partial(
            cp.checkpoint, use_reentrant=reentrant))}))


@pytest.mark.parametrize('pair_cp', [False, True])
def test_tap_inside_a_block_the_student_checkpoints(tiny_cfg, monkeypatch,
                                                    pair_cp):
    """A student tap inside a block the student checkpoints (``with_cp``,
    non-reentrant): the pair, run inside that block's forward, keeps its
    own tensors (the checkpoint's recompute does not run it), and the
    student gets the same distillation gradient as without ``with_cp``."""
    student_checkpoints(monkeypatch, reentrant=False)
    cfg = tiny_cfg('pspnet')[0]
    cfg.model.distill.stage4.student = 'backbone.layer4.1.conv2'
    cfg.model.distill.stage4.with_cp = pair_cp
    models = []
    for with_cp in (False, True):
        cfg.model.student.backbone.with_cp = with_cp
        models.append(build(cfg, cfg.model))
    models[1].load_state_dict(models[0].state_dict())
    grads = []
    for model in models:
        model.train()
        data = model.data_preprocessor(
            random_batch('seg', (64, 64), 2, 19, seed=0), True)
        losses = model(data['inputs'], data['data_samples'], mode='loss')
        losses['loss_distill_stage4'].backward()
        grads.append({n: p.grad for n, p in model.student.named_parameters()
                      if p.grad is not None})
    plain, checkpointed = grads
    assert len(plain) > 20 and plain.keys() == checkpointed.keys()
    for name, grad in plain.items():
        torch.testing.assert_close(checkpointed[name], grad, rtol=1e-4,
                                   atol=1e-7, msg=name)


def test_tap_inside_a_reentrant_checkpoint_is_named(tiny_cfg, monkeypatch):
    """Under a reentrant checkpoint the tapped layer runs without
    gradients: the warning says so and what to tap instead."""
    student_checkpoints(monkeypatch, reentrant=True)
    cfg = tiny_cfg('pspnet')[0]
    cfg.model.distill.stage4.student = 'backbone.layer4.1.conv2'
    cfg.model.student.backbone.with_cp = True
    model = build(cfg, cfg.model)
    model.train()
    data = model.data_preprocessor(
        random_batch('seg', (64, 64), 2, 19, seed=0), True)
    with pytest.warns(UserWarning, match='a layer inside a block the student '
                      r'checkpoints, with_cp=True\): its loss cannot train'):
        model(data['inputs'], data['data_samples'], mode='loss')


def test_pair_tensors_changed_in_place_stop_the_backward():
    """What a pair keeps for its backward is still checked for in-place
    changes, as autograd does without hooks."""
    x = torch.randn(4, requires_grad=True)
    with single_teacher.pair_saved_tensors():
        y = x.exp()  # keeps its output
        total = (y * 2).sum()
    y.add_(1)
    with pytest.raises(RuntimeError, match='modified in place afterwards'):
        total.backward()


def test_with_cp_must_be_a_bool(tiny_cfg):
    cfg = tiny_cfg('pspnet')[0]
    cfg.model.distill.stage4.with_cp = 'yes'
    with pytest.raises(ValueError, match=r"distill.stage4.with_cp must be "
                       r"True or False, got 'yes'"):
        build(cfg, cfg.model)


@pytest.mark.parametrize('with_cp', [False, True])
def test_pairs_run_with_gradients_in_place(tiny_cfg, monkeypatch, with_cp):
    """The distiller runs each pair's connector and loss (and their
    recompute under with_cp) within gradients_in_place, where TaT's
    patch-group attention and MSELoss write gradients over their own
    tensors: the same losses and gradients as without."""
    from mmdistill.connectors import tat
    from mmdistill.losses import functional
    from mmdistill.utils import tensor
    cfg = tiny_cfg('pspnet')[0]
    cfg.model.distill = tat_pairs(with_cp)
    torch.manual_seed(0)
    model = build(cfg, cfg.model)
    model.train()
    data = model.data_preprocessor(
        random_batch('seg', (64, 64), 2, 19, seed=0), True)
    seen = []
    connector = model.connectors['patch_group']
    forward = connector.forward

    def spy(*args, **kwargs):
        seen.append(tensor.gradients_in_place_allowed())
        return forward(*args, **kwargs)

    monkeypatch.setattr(connector, 'forward', spy)
    results = []
    for allowed in (True, False):
        if not allowed:
            for module in (tat, functional):
                monkeypatch.setattr(module, 'gradients_in_place_allowed',
                                    lambda: False)
        model.zero_grad()
        torch.manual_seed(0)
        losses = model(data['inputs'], data['data_samples'], mode='loss')
        model.parse_losses(losses)[0].backward()
        results.append((losses, {n: p.grad.clone() for n, p in
                                 model.named_parameters()
                                 if p.grad is not None}))
    # in place inside the pair (and again in with_cp's recompute)
    assert seen[:1 + with_cp] == [True] * (1 + with_cp)
    (losses, grads), (plain_losses, plain_grads) = results
    for key in ('loss_distill_anchor', 'loss_distill_patch_group'):
        assert torch.equal(losses[key], plain_losses[key]), key
    assert grads.keys() == plain_grads.keys()
    for name, grad in grads.items():
        torch.testing.assert_close(grad, plain_grads[name], rtol=1e-5,
                                   atol=1e-7, msg=name)
