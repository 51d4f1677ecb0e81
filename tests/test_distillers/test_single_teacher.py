"""SingleTeacherDistiller on a shrunken real RetinaNet / PSPNet."""
import copy
import os.path as osp

import pytest
import torch
from mmengine.config import ConfigDict
from mmengine.registry import MODELS as ROOT_MODELS
from mmengine.registry import DefaultScope

from mmdistill.registry import MODELS
from mmdistill.testing import random_checkpoint


def build(cfg):
    with DefaultScope.overwrite_default_scope(cfg.get('default_scope')):
        return ROOT_MODELS.build(copy.deepcopy(cfg.model))


def det_batch(model, num_boxes=(2, 0), raw=False):
    """A preprocessed batch of 2 images with boxes (and one without); with
    ``raw`` the dict the data preprocessor takes."""
    from mmdet.structures import DetDataSample
    from mmengine.structures import InstanceData
    inputs, samples = [], []
    for i, k in enumerate(num_boxes):
        inputs.append(torch.randint(0, 255, (3, 96, 128), dtype=torch.uint8))
        sample = DetDataSample(metainfo=dict(
            img_shape=(96, 128), ori_shape=(96, 128), scale_factor=(1., 1.)))
        xy = torch.rand(k, 2) * 60
        sample.gt_instances = InstanceData(
            bboxes=torch.cat([xy, xy + 20 + torch.rand(k, 2) * 20], 1),
            labels=torch.randint(0, 80, (k, )))
        samples.append(sample)
    if raw:
        return dict(inputs=inputs, data_samples=samples)
    data = model.data_preprocessor(
        dict(inputs=inputs, data_samples=samples), True)
    return data['inputs'], data['data_samples']


@pytest.fixture
def retina(tiny_cfg):
    cfg, ckpt = tiny_cfg('retinanet')
    return cfg, ckpt


def test_losses_frozen_teacher_and_gradients(retina):
    cfg, _ = retina
    model = build(cfg)
    model.train()
    teacher = model.teacher
    assert all(not m.training for m in teacher.modules())
    assert all(not p.requires_grad for p in teacher.parameters())
    own = {id(p) for p in model.parameters()}
    assert not any(id(p) in own for p in teacher.parameters())
    assert not any(k.startswith('teacher') for k in model.state_dict())
    before = {k: v.clone() for k, v in teacher.state_dict().items()}

    ran = {'neck': 0, 'bbox_head': 0}
    teacher.neck.register_forward_pre_hook(
        lambda *a: ran.__setitem__('neck', ran['neck'] + 1))
    teacher.bbox_head.register_forward_pre_hook(
        lambda *a: ran.__setitem__('bbox_head', ran['bbox_head'] + 1))

    inputs, samples = det_batch(model)
    losses = model(inputs, samples, mode='loss')
    student_keys = set(model.student.loss(inputs, samples))
    assert student_keys < set(losses)
    distill = sorted(k for k in losses if k.startswith('loss_distill_'))
    assert distill == [f'loss_distill_fpn_{i}' for i in range(5)]
    assert ran == {'neck': 1, 'bbox_head': 0}  # teacher stopped after neck

    total = sum(v.sum() if isinstance(v, torch.Tensor) else sum(v)
                for k, v in losses.items() if 'loss' in k)
    total.backward()
    assert all(p.grad is not None
               for p in model.connectors.parameters())
    assert model.student.backbone.layer4[0].conv1.weight.grad is not None
    assert all(p.grad is None for p in teacher.parameters())
    # BN running stats of the teacher never move
    for k, v in teacher.state_dict().items():
        assert torch.equal(v, before[k]), k

    # predict goes to the student alone
    model.eval()
    with torch.no_grad():
        a = model(inputs, samples, mode='tensor')
        b = model.student(inputs, samples, mode='tensor')
    assert all(torch.equal(x, y) for x, y in zip(a[0], b[0]))


def test_teacher_stays_in_eval_through_train_calls(retina):
    cfg, _ = retina
    model = build(cfg)
    for mode in (True, False, True):
        model.train(mode)
        assert model.student.training is mode
        assert all(not m.training for m in model.teacher.modules())


def test_recipe_hooks_reach_the_student_and_a_copy_shares_the_teacher(
        retina):
    """mmdet's YOLOXModeSwitchHook sets ``model.bbox_head.use_l1`` (it
    raised AttributeError on a distiller at the switch epoch); EMAHook's
    averaged model deep-copies the distiller and must not copy the teacher
    (a second teacher on the device, never used)."""
    from types import SimpleNamespace

    from mmdet.engine.hooks import YOLOXModeSwitchHook
    from mmdet.models.layers import ExpMomentumEMA
    from mmengine.logging import MMLogger
    cfg, _ = retina
    model = build(cfg)
    assert model.bbox_head is model.student.bbox_head
    assert not hasattr(model, 'detector')
    with pytest.raises(AttributeError,
                       match=r"'detector', nor has its student \(RetinaNet"):
        model.detector
    dataset = SimpleNamespace(update_skip_type_keys=lambda keys: None)
    # the hook switches before epoch max_epochs - num_last_epochs (mmdet
    # 3.0: exactly then; later versions: from then on)
    runner = SimpleNamespace(
        epoch=0, max_epochs=2, model=model,
        train_dataloader=SimpleNamespace(dataset=dataset),
        logger=MMLogger.get_instance('yolox_switch'))
    YOLOXModeSwitchHook(num_last_epochs=1).before_train_epoch(runner)
    assert model.student.bbox_head.use_l1 is True

    ema = ExpMomentumEMA(model)
    assert ema.module.teacher is model.teacher
    # moving or casting the copy leaves the shared teacher as it is
    ema.module.to(torch.float64)
    assert all(p.dtype == torch.float32 for p in model.teacher.parameters())
    assert ema.module.teacher_runner.model is model.teacher
    assert ema.module.student is not model.student
    assert all(torch.equal(a, b) for a, b in zip(
        ema.module.parameters(), model.parameters()))
    assert not any(p.data_ptr() == q.data_ptr() for p, q in zip(
        ema.module.parameters(), model.parameters()))


def test_layer_depths_are_the_students_for_layer_wise_lr_decay():
    """mmpretrain's LearningRateDecayOptimWrapperConstructor asks the
    model for each parameter's depth by its name: a distiller answers with
    the student's depth of ``student.<name>`` (connectors count as the
    head); through the attribute fallback the student was asked with the
    distiller's names and put every parameter in the head."""
    from types import SimpleNamespace

    from mmdistill.distillers import SingleTeacherDistiller
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        student = ROOT_MODELS.build(dict(
            type='ImageClassifier',
            backbone=dict(type='VisionTransformer', img_size=32,
                          patch_size=16,
                          arch=dict(embed_dims=32, num_layers=2, num_heads=2,
                                    feedforward_channels=64)),
            head=dict(type='VisionTransformerClsHead', num_classes=10,
                      in_channels=32)))
    depth = SingleTeacherDistiller.get_layer_depth
    fake = SimpleNamespace(student=student)
    name = 'backbone.layers.0.ln1.weight'
    assert depth(fake, 'student.' + name) == student.get_layer_depth(name)
    assert depth(fake, 'student.' + name)[0] < depth(
        fake, 'student.backbone.layers.1.ln1.weight')[0]
    assert depth(fake, 'connectors.logits.weight') == \
        student.get_layer_depth('head.layers.head.weight')
    with pytest.raises(NotImplementedError, match='no get_layer_depth'):
        depth(SimpleNamespace(student=torch.nn.Linear(2, 2)), 'student.x')


def test_an_unregistered_student_module_names_custom_imports(retina):
    cfg, _ = retina
    cfg.model.student.neck.type = 'MyPAFPN'
    with pytest.raises(KeyError) as err:
        build(cfg)
    message = str(err.value)
    assert 'MyPAFPN is not in the mmdet::model registry' in message
    assert '(building model.student)' in message
    assert 'custom_imports list written in the distillation config' \
        in message


def test_unknown_tap_path_names_the_closest(retina):
    cfg, _ = retina
    cfg.model.distill.fpn.student = 'neck.fpn_conv.{0-4}.conv'
    with pytest.raises(KeyError) as err:
        build(cfg)
    message = str(err.value)
    assert "'neck.fpn_conv.0.conv' is not a module of the student" in message
    assert 'neck.fpn_convs.0.conv' in message


def test_mismatched_teacher_checkpoint_lists_the_keys(retina, tmp_path):
    cfg, _ = retina
    wrong = copy.deepcopy(cfg.model.teacher.cfg_options.model)
    wrong.pop('_delete_')
    wrong.neck.out_channels = 24
    wrong.bbox_head.in_channels = wrong.bbox_head.feat_channels = 24
    path = str(tmp_path / 'wrong.pth')
    random_checkpoint(wrong, path, scope='mmdet')
    state = torch.load(path)
    state['state_dict'].pop('backbone.conv1.weight')
    state['state_dict']['extra.weight'] = torch.zeros(1)
    torch.save(state, path)
    cfg.model.teacher.checkpoint = path
    with pytest.raises(ValueError) as err:
        build(cfg)
    message = str(err.value)
    assert 'missing in the checkpoint (1)' in message
    assert 'backbone.conv1.weight' in message
    assert 'unexpected in the checkpoint (1)' in message
    assert 'extra.weight' in message
    assert 'shape mismatch' in message
    assert 'neck.fpn_convs.0.conv.weight' in message
    assert 'strict=False' in message

    cfg.model.teacher.strict = False
    with pytest.warns(UserWarning, match='matching weights only'):
        model = build(cfg)
    loaded = model.teacher.state_dict()
    assert torch.equal(loaded['backbone.layer1.0.conv1.weight'],
                       state['state_dict']['backbone.layer1.0.conv1.weight'])


def test_missing_checkpoint_and_bad_pair_are_clear(retina):
    cfg, _ = retina
    bad = copy.deepcopy(cfg)
    bad.model.teacher.checkpoint = None
    with pytest.raises(ValueError, match='teacher.checkpoint is required'):
        build(bad)
    bad = copy.deepcopy(cfg)
    bad.model.distill.fpn.pop('loss')
    with pytest.raises(ValueError, match='needs student, teacher and loss'):
        build(bad)
    bad = copy.deepcopy(cfg)
    bad.model.distill.fpn.teacher = 'neck.fpn_convs.{0-2}.conv'
    with pytest.raises(ValueError, match='5 levels .* 3'):
        build(bad)


def test_inherit_from_teacher_and_student_checkpoint(tiny_cfg, tmp_path):
    cfg, ckpt = tiny_cfg('retinanet', same_shape=True)
    cfg.model.init_student_from_teacher = ['neck', 'bbox_head']
    student_ckpt = random_checkpoint(
        cfg.model.student, str(tmp_path / 'student.pth'), scope='mmdet',
        seed=7)
    cfg.model.student_checkpoint = student_ckpt
    model = build(cfg)
    model.init_weights()
    teacher = torch.load(ckpt)['state_dict']
    pretrained = torch.load(student_ckpt)['state_dict']
    state = model.student.state_dict()
    for key, value in state.items():
        if key.startswith(('neck.', 'bbox_head.')):
            assert torch.equal(value, teacher[key]), key
        elif key.startswith('backbone.'):
            assert torch.equal(value, pretrained[key]), key


def test_load_from_a_student_checkpoint_goes_into_the_student(
        tiny_cfg, tmp_path):
    """mmengine's ``load_from`` with a checkpoint of the student alone, in
    the Runner: it fills the student (its keys lack ``student.``; mmengine
    loaded nothing of it before and trained from the initialisation), a
    class count of another dataset loads all but the classifier, a
    checkpoint of another model stops before training, and ``--resume``
    refuses it, naming load_from (a distiller's own runner checkpoint
    loads as before: the resume tests)."""
    from mmengine.runner import Runner

    from mmdistill.utils.checkpoint import CheckpointMismatchError
    cfg, teacher = tiny_cfg('pspnet')
    path = random_checkpoint(cfg.model.student, str(tmp_path / 's.pth'),
                             scope='mmseg', seed=7, init=False)
    expected = torch.load(path)['state_dict']
    cfg.load_from = path
    runner = Runner.from_cfg(copy.deepcopy(cfg))
    runner.load_or_resume()
    state = runner.model.student.state_dict()
    assert state.keys() == expected.keys()
    assert all(torch.equal(state[k], v) for k, v in expected.items())
    # a dataset of 5 classes: the classifiers keep their initialisation
    other = copy.deepcopy(cfg)
    for head in ('decode_head', 'auxiliary_head'):
        other.model.student[head].num_classes = 5
    runner = Runner.from_cfg(other)
    runner.load_or_resume()
    state = runner.model.student.state_dict()
    kept = [k for k in state if 'conv_seg' in k]
    assert kept and all(torch.equal(state[k], expected[k])
                        for k in state if k not in kept)
    # the teacher's checkpoint (another width) fits under 10 %: stop
    bad = copy.deepcopy(cfg)
    bad.load_from = teacher
    with pytest.raises(CheckpointMismatchError,
                       match=r"neither a runner checkpoint of a distillation "
                       r"\(keys 'student.…'\) nor one of its student"):
        Runner.from_cfg(bad).train()
    resumed = copy.deepcopy(cfg)
    resumed.resume = True
    runner = Runner.from_cfg(resumed)
    with pytest.raises(ValueError, match=r'--resume \(resume=True\) takes a '
                       'runner checkpoint of this distillation .* give it '
                       r'as load_from \(without --resume\)'):
        runner.load_or_resume()
    assert runner.iter == 0


def test_losses_receive_data_samples(retina):
    seen = {}

    @MODELS.register_module(force=True)
    class _RecordingLoss(torch.nn.Module):

        def forward(self, student, teacher, data_samples=None):
            seen['samples'] = data_samples
            return (student - teacher).abs().mean()

    cfg, _ = retina
    cfg.model.distill = ConfigDict(
        p3=dict(
            student='neck.fpn_convs.0.conv',
            teacher='neck.fpn_convs.0.conv',
            connector=dict(type='LinearConnector', in_channels=16,
                           out_channels=32),
            loss=dict(type='_RecordingLoss')),
        fgd=dict(
            student='neck[1]',
            teacher='neck[1]',
            loss=dict(type='FGDLoss', in_channels=32, student_channels=16)))
    model = build(cfg)
    inputs, samples = det_batch(model)
    losses = model(inputs, samples, mode='loss')
    assert seen['samples'] is samples
    assert torch.isfinite(losses['loss_distill_fgd'])
    assert set(k for k in losses if k.startswith('loss_distill')) == {
        'loss_distill_p3', 'loss_distill_fgd'}


def test_student_checkpoint_that_fits_nothing_stops(retina, tmp_path):
    cfg, _ = retina
    path = str(tmp_path / 'other.pth')
    torch.save(dict(state_dict={'fc.weight': torch.zeros(2)}), path)
    cfg.model.student_checkpoint = path
    model = build(cfg)
    with pytest.raises(ValueError, match='not a single weight fits'):
        model.init_weights()


def test_non_finite_distill_loss_names_pair_and_cause(retina):
    """The forward returns a non-finite loss as it is (checking it there
    would synchronise a GPU every step); train_step stops after the update
    naming the pair and the side (more cases in test_guard.py)."""
    from mmengine.optim import OptimWrapper

    from mmdistill.distillers.guard import DistillGuardError
    cfg, _ = retina
    model = build(cfg)
    model.train()
    inputs, samples = det_batch(model)
    with torch.no_grad():
        model.teacher.neck.fpn_convs[2].conv.weight.fill_(float('nan'))
    losses = model(inputs, samples, mode='loss')
    assert torch.isnan(losses['loss_distill_fpn_2'])
    assert torch.isfinite(losses['loss_distill_fpn_1'])

    wrapper = OptimWrapper(torch.optim.SGD(model.parameters(), lr=0.))
    with pytest.raises(DistillGuardError) as err:
        model.train_step(det_batch(model, raw=True), wrapper)
    message = str(err.value)
    assert 'loss_distill_fpn_2 is nan' in message
    assert 'fpn_1' not in message
    assert 'teacher feature not finite' in message


def test_teacher_gets_its_config_level_data_preprocessor(tmp_path):
    """mmpretrain configs define ``data_preprocessor`` at the top level (the
    Runner gives it to the model); the teacher is built with it too, so the
    RGB/mean/std comparison with the student is a true one."""
    import warnings as _warnings

    from mmengine.config import Config

    from mmdistill.testing import use_random_teacher
    root = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
    cfg = Config.fromfile(osp.join(
        root, 'configs', 'vit_attention',
        'vit-attention_last-block_deit-small_deit-tiny_300e_in1k.py'))
    use_random_teacher(cfg, str(tmp_path / 'teacher.pth'))
    model = dict(cfg.model, data_preprocessor=cfg.data_preprocessor)
    with _warnings.catch_warnings(record=True) as caught:
        _warnings.simplefilter('always')
        with DefaultScope.overwrite_default_scope('mmpretrain'):
            distiller = ROOT_MODELS.build(model)
    assert distiller.teacher.data_preprocessor.to_rgb is True
    assert not [w for w in caught if 'BGR to RGB' in str(w.message)]

    # the loss's head counts are checked against the tapped layers
    model["distill"].class_attention.loss.student_heads = 6  # DeiT-tiny: 3
    with pytest.raises(ValueError, match=r'Loss settings do not fit their '
                       r'taps:\ndistill.class_attention.loss.student_heads=6'
                       r", but the tapped layer 'backbone.layers.11.attn' "
                       'has num_heads=3: set student_heads=3.'):
        with DefaultScope.overwrite_default_scope('mmpretrain'):
            ROOT_MODELS.build(model)
