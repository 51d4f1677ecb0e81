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


def test_with_cp_pairs_same_values_gradients_and_statistics(tiny_cfg):
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
    for model in models:
        model.train()
        saved = []

        def pack(x):
            saved.append(x)
            return x

        torch.manual_seed(0)
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda x: x):
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
    # what the step keeps for the backward: less by the TaT maps
    assert tensor_bytes(cp_saved) < tensor_bytes(plain_saved)


def test_with_cp_must_be_a_bool(tiny_cfg):
    cfg = tiny_cfg('pspnet')[0]
    cfg.model.distill.stage4.with_cp = 'yes'
    with pytest.raises(ValueError, match=r"distill.stage4.with_cp must be "
                       r"True or False, got 'yes'"):
        build(cfg, cfg.model)
