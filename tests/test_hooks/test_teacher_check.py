"""TeacherCheckHook: the teacher scored on validation batches before the
first iteration, in the mmengine Runner on shrunken real models.

A random teacher checkpoint is caught (mmseg IoUMetric, mmdet CocoMetric,
mmpretrain Accuracy) before anything is trained or written; a teacher
trained for a few iterations passes and scores what its own validation
scores; an oracle teacher (the ground truth as its prediction) scores the
maximum, which also shows that the COCO evaluation is restricted to the
images scored."""
import copy
import glob
import json
import os
import os.path as osp

import pytest
import torch
import torch.nn as nn
from mmengine.config import Config
from mmengine.runner import Runner

from mmdistill.hooks.teacher_check import (TeacherCheckError,
                                           TeacherCheckHook,
                                           _best_constant_miou, chance_level,
                                           class_mismatch, main_metric,
                                           teacher_class_counts)
from mmdistill.testing import tiny_model, tiny_segmentation
from mmdistill.utils.config import load_config


def _hook(cfg, **kwargs):
    cfg.custom_hooks = [dict(type='mmdistill.TeacherCheckHook', **kwargs)]
    # a visualizer of its own (mmseg's runtime names it 'visualizer': a
    # later Runner in this process would reuse the instance and its files)
    cfg.visualizer.name = f'teacher_check_{id(cfg)}'
    return cfg


def _checkpoints(work_dir):
    found = []
    for _, _, files in os.walk(work_dir):
        found += [f for f in files if f.endswith('.pth')]
    return found


def _the_hook(runner) -> TeacherCheckHook:
    return next(h for h in runner.hooks if isinstance(h, TeacherCheckHook))


# ------------------------------------------------------------ unit parts
def test_main_metric_and_chance_levels():
    assert main_metric({'coco/bbox_mAP': 0.1, 'coco/bbox_mAP_50': 0.2,
                        'coco/bbox_mAP_copypaste': '0.1 0.2'}) == \
        'coco/bbox_mAP'
    assert main_metric({'aAcc': 50.0, 'mIoU': 3.0}) == 'mIoU'
    assert main_metric({'accuracy/top1': 1.0, 'accuracy/top5': 2.0}) == \
        'accuracy/top1'
    assert main_metric({'accuracy/top1': 1.0, 'accuracy/top5': 2.0},
                       'top5') == 'accuracy/top5'
    with pytest.raises(ValueError, match="metric='nope'.*accuracy/top1"):
        main_metric({'accuracy/top1': 1.0}, 'nope')
    with pytest.raises(ValueError, match='set .*metric=<one of them>'):
        main_metric({'custom/score': 1.0})

    assert chance_level('coco/bbox_mAP', 80, 10)[0] == 0.01
    # mIoU: the higher of 100 / K and one class everywhere
    assert chance_level('mIoU', 19, 10)[0] == pytest.approx(100 / 19)
    assert chance_level('mIoU', 19, 10, constant_miou=30.0)[0] == 30.0
    # top-1 of 10 classes on 100 images: 10 % + 3 * sqrt(.1 * .9 / 100)
    value, text = chance_level('accuracy/top1', 10, 100)
    assert value == pytest.approx(100 * (0.1 + 3 * 0.03))
    assert '3 standard deviations on 100 images' in text
    assert chance_level('accuracy/top5', 1000, 50000)[0] == pytest.approx(
        100 * (0.005 + 3 * (0.005 * 0.995 / 50000)**0.5))
    assert chance_level('custom/score', 10, 10) is None


def test_best_constant_miou_is_what_mmseg_scores_for_it():
    """The chance baseline of mmseg equals IoUMetric's own mIoU of a
    prediction of the most frequent class everywhere."""
    from mmseg.evaluation import IoUMetric
    g = torch.Generator().manual_seed(0)
    labels = [torch.randint(0, 4, (16, 16), generator=g) for _ in range(3)]
    labels[0][:8] = 2  # class 2 the most frequent
    labels[1][labels[1] == 3] = 255  # ignored pixels
    metric = IoUMetric()
    metric.dataset_meta = dict(classes=[f'c{i}' for i in range(6)])
    results = []
    for label in labels:
        valid = label != 255
        results.append(metric.intersect_and_union(
            torch.full_like(label, 2)[valid], label[valid], 6, 255))
    expected = metric.compute_metrics(results)['mIoU']
    assert _best_constant_miou(results) == pytest.approx(expected, abs=0.01)


def test_arguments_are_checked():
    with pytest.raises(ValueError, match='num_batches'):
        TeacherCheckHook(num_batches=0)
    with pytest.raises(ValueError, match='min_score'):
        TeacherCheckHook(min_score='high')


def test_class_mismatch_is_judged_on_the_predicting_heads():
    """What counts as the teacher predicting other classes than the
    dataset: heads of 1 class (RPN) and auxiliary heads are no mismatch;
    several other counts, or none, cannot be told (the teacher is scored
    as before)."""
    assert class_mismatch([80], 3) == 80  # RetinaNet COCO, 3 classes
    assert class_mismatch([1, 80], 3) == 80  # Faster R-CNN: RPN + RoI head
    assert class_mismatch([1, 80], 80) is None
    assert class_mismatch([1, 80], 1) == 80  # one class: the RPN's is not it
    assert class_mismatch([1], 1) is None
    assert class_mismatch([1], 3) is None  # class-agnostic only: unknown
    assert class_mismatch([19], 19) is None  # decode + auxiliary head
    assert class_mismatch([19], 150) == 19
    assert class_mismatch([54, 80], 133) is None  # panoptic: unknown
    assert class_mismatch([], 3) is None
    assert class_mismatch([80], None) is None

    class Head(nn.Module):

        def __init__(self, num_classes):
            super().__init__()
            self.num_classes = num_classes

    model = nn.Sequential(Head(1), Head(80), Head(80), Head(None),
                          Head(True), Head(0))
    assert teacher_class_counts(model) == [1, 80]
    model.language_model = nn.Identity()  # open vocabulary: prompted
    assert teacher_class_counts(model) == []


# ------------------------------------------------- random teachers stop
def test_random_segmentation_teacher_stops_before_training(tiny_cfg):
    cfg, checkpoint = tiny_cfg('pspnet')
    _hook(cfg, num_batches=2)
    runner = Runner.from_cfg(cfg)
    with pytest.raises(TeacherCheckError) as info:
        runner.train()
    text = str(info.value)
    assert 'mIoU' in text and 'at chance level' in text
    assert 'most frequent class' in text or '100 / 19' in text
    # the usual causes, naming this run's files
    assert checkpoint in text and 'pspnet_r101-d8' in text
    assert 'BGR/RGB' in text and 'mean/std' in text
    assert 'predicts 19 classes like the dataset' in text
    assert 'min_score' in text and 'custom_hooks' in text
    # nothing trained, nothing saved
    assert runner.iter == 0
    assert _checkpoints(cfg.work_dir) == []
    # logged for the user and the backends
    assert 'teacher/mIoU' in runner.message_hub.log_scalars
    # mmseg's per-class table is announced as the teacher's
    log_file = glob.glob(osp.join(runner.log_dir, '*.log'))[0]
    with open(log_file) as f:
        log = f.read()
    assert log.index('scoring the teacher (not the student)') < \
        log.index('per class results')
    # the validation loop's own evaluator was not used
    assert runner.val_loop.evaluator.metrics[0].results == []


def test_random_detection_teacher_stops(tiny_cfg):
    """A random RetinaNet predicts no box above its score threshold:
    CocoMetric returns nothing, which counts as mAP 0."""
    cfg, _ = tiny_cfg('retinanet')
    _hook(cfg, num_batches=2)
    runner = Runner.from_cfg(cfg)
    with pytest.raises(TeacherCheckError,
                       match=r'coco/bbox_mAP = 0 .*at chance level .*and '
                       'the teacher predicted no box'):
        runner.train()
    assert runner.iter == 0


def test_preprocessing_differences_are_named(tiny_cfg):
    """A teacher config that normalises otherwise: the message says how."""
    cfg, _ = tiny_cfg('pspnet')
    overrides = copy.deepcopy(cfg.model.teacher.cfg_options)
    overrides['model']['data_preprocessor'] = dict(
        overrides['model']['data_preprocessor'], bgr_to_rgb=False,
        mean=[0.0, 0.0, 0.0], std=[1.0, 1.0, 1.0])
    cfg.model.teacher.cfg_options = overrides
    _hook(cfg, num_batches=1)
    with pytest.warns(UserWarning):
        runner = Runner.from_cfg(cfg)
    with pytest.raises(TeacherCheckError) as info:
        runner.train()
    text = str(info.value)
    assert 'here they differ (BGR->RGB: student True, teacher config ' \
        'False; mean: student [123.675, 116.28, 103.53], teacher config ' \
        '[0.0, 0.0, 0.0]; std:' in text


def test_random_classification_teacher_stops(tmp_path, imagenet_root):
    """mmpretrain's Accuracy: a random DeiT teacher is at chance."""
    pytest.importorskip('mmpretrain.models',
                        reason='mmpretrain.models cannot be imported')
    from mmdistill.testing import (random_checkpoint, teacher_overrides,
                                   tiny_classification)
    import glob
    root = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
    # the shipped DeiT-small -> DeiT-tiny config (the only one there)
    config, = glob.glob(osp.join(root, 'configs', 'vit_attention', '*.py'))
    cfg = Config.fromfile(config)
    cfg.model.student = tiny_model(cfg.model.student, 'cls', width=8)
    teacher = tiny_model(load_config(cfg.model.teacher.config).model, 'cls',
                         width=8)
    cfg.model.teacher.checkpoint = random_checkpoint(
        teacher, str(tmp_path / 'teacher.pth'), scope='mmpretrain')
    cfg.model.teacher.cfg_options = teacher_overrides(teacher)
    tiny_classification(cfg, str(tmp_path / 'work'), imagenet_root)
    _hook(cfg, num_batches=2)
    runner = Runner.from_cfg(cfg)
    with pytest.raises(TeacherCheckError,
                       match=r'accuracy/top1 = .* at chance level .*of 1000 '
                       'classes at random'):
        runner.train()
    assert runner.iter == 0


# ------------------------------------------------------ oracle teachers
class Oracle(nn.Module):
    """Predicts the ground truth of each data sample (a perfect teacher),
    with the data preprocessor of the teacher it replaces."""

    def __init__(self, kind: str, data_preprocessor) -> None:
        super().__init__()
        self.kind = kind
        self.data_preprocessor = data_preprocessor
        self.calls = 0

    def forward(self, inputs, data_samples=None, mode='tensor'):
        assert mode == 'predict'
        self.calls += 1
        from mmengine.structures import InstanceData, PixelData
        for sample in data_samples:
            if self.kind == 'det':
                gt = sample.gt_instances
                boxes = getattr(gt.bboxes, 'tensor', gt.bboxes)
                # mmdet's test pipeline loads the boxes after the resize:
                # they are in the original image's coordinates already
                sample.pred_instances = InstanceData(
                    bboxes=boxes.clone(), labels=gt.labels.clone(),
                    scores=torch.ones(len(boxes)))
            else:
                sample.pred_sem_seg = PixelData(
                    data=sample.gt_sem_seg.data.clone())
        return data_samples


def _oracle_runner(tiny_cfg, name, kind, **hook):
    cfg, _ = tiny_cfg(name)
    _hook(cfg, **hook)
    runner = Runner.from_cfg(cfg)
    distiller = runner.model
    distiller.__dict__['teacher'] = Oracle(
        kind, distiller.teacher.data_preprocessor)
    return runner


def test_oracle_detector_passes_on_the_images_it_scored(tiny_cfg):
    """1 of the 2 validation images: mAP 1.0 (COCO evaluation restricted to
    the scored image; over the whole annotation file the unscored image's
    boxes would all be misses)."""
    runner = _oracle_runner(tiny_cfg, 'retinanet', 'det', num_batches=1)
    hook = _the_hook(runner)
    metrics = hook.evaluate_teacher(runner)
    assert runner.model.teacher.calls == 1
    assert metrics['coco/bbox_mAP'] == pytest.approx(1.0)
    # the real validation loop's evaluator is untouched
    coco = runner.val_loop.evaluator.metrics[0]
    assert coco.img_ids is None and coco.results == []
    hook.before_train(runner)  # passes


def test_oracle_segmentor_passes_and_restores_the_generators(tiny_cfg):
    runner = _oracle_runner(tiny_cfg, 'pspnet', 'seg', num_batches=5)
    hook = _the_hook(runner)
    state = torch.get_rng_state()
    hook.before_train(runner)  # passes
    assert torch.equal(torch.get_rng_state(), state)
    assert hook.metrics['mIoU'] == pytest.approx(100.0)
    # 5 batches asked, the 2 images of the validation set scored
    assert runner.model.teacher.calls == 2 and hook._num_samples == 2
    log = open(osp.join(runner.log_dir, f'{runner.timestamp}.log')).read()
    assert 'the teacher on 2 validation images (2 batches per rank)' in log
    # the evaluator's own numbers are logged under teacher/
    scalars = runner.message_hub.log_scalars
    assert scalars['teacher/mIoU'].current() == pytest.approx(100.0)
    assert 'teacher/aAcc' in scalars


def test_min_score_stops_a_working_teacher(tiny_cfg):
    runner = _oracle_runner(tiny_cfg, 'pspnet', 'seg', num_batches=1,
                            min_score=100.5)
    with pytest.raises(TeacherCheckError,
                       match=r'mIoU = 100 .*below min_score=100.5'):
        runner.train()


# ------------------------------------- teacher classes the dataset lacks
def _three_class_student(tiny_cfg, coco_root):
    """The RetinaNet pair with a COCO-80 teacher and a student trained on 3
    of the classes (those of the validation images first): the teacher
    keeps boxes of all 80 classes, which the student's CocoMetric has no
    category for."""
    cfg, _ = tiny_cfg('retinanet')
    with open(osp.join(coco_root, 'annotations',
                       'instances_val2017.json')) as f:
        ann = json.load(f)
    names = {c['id']: c['name'] for c in ann['categories']}
    used = sorted({a['category_id'] for a in ann['annotations']})
    ids = list(dict.fromkeys(used + sorted(names)))[:3]
    classes = tuple(names[i] for i in ids)
    for key in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        cfg[key].dataset.metainfo = dict(classes=classes)
    cfg.model.student.bbox_head.num_classes = 3
    teacher = cfg.model.teacher.cfg_options['model']
    assert teacher['bbox_head']['num_classes'] == 80
    teacher['test_cfg'].update(score_thr=0.0, max_per_img=20)
    return cfg


def test_teacher_with_other_classes_is_not_scored(tiny_cfg, coco_root):
    """A COCO-80 teacher, a 3-class student dataset: the check is skipped
    with one line saying why, the bfloat16 comparison still runs, and
    training goes on (the student's CocoMetric raised IndexError on the
    teacher's labels before)."""
    cfg = _three_class_student(tiny_cfg, coco_root)
    cfg.model.teacher.dtype = 'bfloat16'
    _hook(cfg, num_batches=1)
    runner = Runner.from_cfg(cfg)
    runner.train()
    assert runner.iter == 2  # trained (4 images, batches of 2)
    hook = _the_hook(runner)
    assert hook.skipped is not None and hook.metrics == {}
    assert hook.precision  # teacher.dtype still compared with float32
    assert not any(k.startswith('teacher/')
                   for k in runner.message_hub.log_scalars)
    log = open(osp.join(runner.log_dir, f'{runner.timestamp}.log')).read()
    assert ('TeacherCheckHook: not scoring the teacher: the teacher '
            "predicts 80 classes and the dataset has 3, so the student's "
            'val_evaluator cannot score its predictions (the features the '
            'student is distilled on do not depend on the classes); '
            'training goes on.') in log
    assert log.count('not scoring the teacher') == 1
    assert "teacher.dtype='bfloat16': its tapped features differ" in log
    assert 'scoring the teacher (not the student)' not in log


def test_evaluator_errors_name_the_hook(tiny_cfg, coco_root, monkeypatch):
    """When the class counts cannot be told, the teacher is scored as
    before; the evaluator's error comes wrapped, naming the hook, the likely
    cause and the fix, chained to the original."""
    from mmdistill.hooks import teacher_check
    monkeypatch.setattr(teacher_check, 'teacher_class_counts',
                        lambda model: [])
    cfg = _three_class_student(tiny_cfg, coco_root)
    _hook(cfg, num_batches=1)
    runner = Runner.from_cfg(cfg)
    with pytest.raises(TeacherCheckError) as info:
        runner.train()
    text = str(info.value)
    assert text.startswith('TeacherCheckHook could not score the teacher: '
                           "the student's val_evaluator (CocoMetric) raised "
                           'IndexError: list index out of range.')
    assert 'other classes' in text
    assert 'remove TeacherCheckHook from custom_hooks' in text
    assert isinstance(info.value.__cause__, IndexError)
    assert runner.iter == 0


def test_no_process_waits_for_one_that_failed(tiny_cfg, monkeypatch):
    """Under DDP an error on one process used to leave the others waiting
    in the evaluator's gather until the launcher's timeout. Here, in one
    process, the collectives are observed: a process whose evaluator
    raises still reaches the all-reduce that tells the others; a process
    told that another failed stops naming it; the main process whose
    metrics raised still reaches the evaluator's broadcast."""
    import mmengine.evaluator.metric as metric_module
    from mmdistill.hooks import teacher_check
    from mmseg.evaluation import IoUMetric
    cfg, _ = tiny_cfg('pspnet')
    runner = Runner.from_cfg(_hook(cfg, num_batches=2))
    hook = _the_hook(runner)
    reduced = []

    def all_reduce(tensor, peer_failed=False):
        reduced.append(tensor.tolist())
        tensor[1] += int(peer_failed)

    # 1. this process's evaluator raises on its batch
    monkeypatch.setattr(teacher_check, 'all_reduce', all_reduce)

    def process(self, data_batch, data_samples):
        raise ValueError('a sample the metric cannot read')

    with monkeypatch.context() as patch:
        patch.setattr(IoUMetric, 'process', process)
        with pytest.raises(TeacherCheckError,
                           match='raised ValueError: a sample the metric '
                           'cannot read') as info:
            hook.before_train(runner)
    assert reduced == [[0, 1]]  # told the others, then raised
    assert isinstance(info.value.__cause__, ValueError)

    # 2. another process failed: this one stops too, naming it, before
    # the evaluator's gather
    reduced.clear()
    with monkeypatch.context() as patch:
        patch.setattr(teacher_check, 'all_reduce',
                      lambda t: all_reduce(t, peer_failed=True))
        patch.setattr(teacher_check, 'all_gather_object',
                      lambda text: [text, 'RuntimeError: out of memory'])
        with pytest.raises(TeacherCheckError) as info:
            hook.before_train(runner)
    assert str(info.value).startswith(
        'TeacherCheckHook: process 1 failed while scoring the teacher '
        '(RuntimeError: out of memory); this process stops with it.')
    assert reduced == [[2, 0]]  # both of its images scored

    # 3. the main process's metrics raise: it still broadcasts (its
    # metrics, then the error), and every process raises the same
    broadcasts = []
    broadcast = metric_module.broadcast_object_list
    monkeypatch.setattr(metric_module, 'broadcast_object_list',
                        lambda data, *a, **k: (broadcasts.append('metric'),
                                               broadcast(data, *a, **k)))

    def compute_metrics(self, results):
        raise KeyError('ignore_index')

    monkeypatch.setattr(IoUMetric, 'compute_metrics', compute_metrics)
    with pytest.raises(TeacherCheckError,
                       match=r"\(IoUMetric\) raised KeyError: 'ignore_index'"
                       ) as info:
        hook.before_train(runner)
    assert broadcasts == ['metric']
    assert isinstance(info.value.__cause__, KeyError)
    assert runner.iter == 0


# ------------------------------------------- teacher.dtype against float32
def _float16_cpu_autocast() -> bool:
    """Whether this torch autocasts a CPU conv to float16 (2.1 does not)."""
    try:
        with torch.autocast('cpu', dtype=torch.float16):
            return torch.nn.Conv2d(3, 3, 1)(
                torch.ones(1, 3, 2, 2)).dtype == torch.float16
    except RuntimeError:
        return False


def test_half_teacher_features_are_compared_with_float32(tiny_cfg):
    cfg, _ = tiny_cfg('pspnet')
    cfg.model.teacher.dtype = 'bfloat16'
    _hook(cfg, num_batches=1, check_chance=False)
    runner = Runner.from_cfg(cfg)
    hook = _the_hook(runner)
    hook.evaluate_teacher(runner)
    (tap, (error, finite)), = hook.precision.items()
    assert tap == 'stage4' and finite  # the pair's tap name
    # bfloat16 keeps 8 bits of mantissa: about a percent apart, not 0
    assert 1e-4 < error < 0.05
    # compared before training: the weights are still float32 then
    distiller = runner.model
    assert distiller.teacher_runner.cast_pending
    assert all(p.dtype == torch.float32
               for p in distiller.teacher.parameters())
    hook.before_train(runner)  # passes (no chance check here)

    # a float32 teacher: nothing compared
    cfg, _ = tiny_cfg('pspnet')
    _hook(cfg, num_batches=1, check_chance=False)
    runner = Runner.from_cfg(cfg)
    _the_hook(runner).evaluate_teacher(runner)
    assert _the_hook(runner).precision == {}


@pytest.mark.skipif(not _float16_cpu_autocast(),
                    reason='this torch does not autocast the CPU to float16')
def test_float16_overflow_stops_before_training(tiny_cfg):
    cfg, checkpoint = tiny_cfg('pspnet')
    cfg.model.teacher.dtype = 'float16'
    _hook(cfg, num_batches=1, check_chance=False)
    # the tapped block's last norm scales its output past float16's range
    # (65504); float32 holds it
    weights = torch.load(checkpoint, weights_only=True)
    state = weights.get('state_dict', weights)
    scale = sorted(k for k in state if k.startswith('backbone.layer4.')
                   and k.endswith('.weight') and '.bn' in k)[-1]
    state[scale] = torch.full_like(state[scale], 1e6)  # was 0: zero init
    torch.save(weights, checkpoint)
    runner = Runner.from_cfg(cfg)
    with pytest.raises(TeacherCheckError,
                       match=r"teacher.dtype='float16': .*inf or NaN .*"
                       r"\(stage4\).*overflow float16. Set "
                       r"teacher.dtype='bfloat16'"):
        runner.train()
    assert runner.iter == 0
    assert _checkpoints(cfg.work_dir) == []


# --------------------------------------------- a trained teacher passes
@pytest.fixture(scope='module')
def trained_teacher(tmp_path_factory, cityscapes_root):
    """A shrunken PSPNet R18 trained alone for 60 iterations on the 4
    training images of the generated Cityscapes layout (and validated on
    them): its checkpoint, model config and validation mIoU."""
    root = tmp_path_factory.mktemp('trained_teacher')
    cfg = load_config(
        'mmseg::pspnet/pspnet_r18-d8_4xb2-80k_cityscapes-512x1024.py')
    cfg.model = tiny_model(cfg.model, 'seg', width=8)
    tiny_segmentation(cfg, str(root / 'work'), cityscapes_root, iters=60)
    cfg.train_dataloader.batch_size = 4
    _val_on_train(cfg)
    cfg.optim_wrapper = dict(
        type='OptimWrapper',
        optimizer=dict(type='AdamW', lr=1e-2, weight_decay=1e-4))
    cfg.param_scheduler = []
    cfg.randomness = dict(seed=0)
    cfg.default_hooks.logger.interval = 20
    cfg.visualizer.name = 'teacher_check_trained_teacher'
    runner = Runner.from_cfg(cfg)
    runner.train()
    miou = runner.message_hub.get_scalar('val/mIoU').current()
    return dict(checkpoint=osp.join(cfg.work_dir, 'iter_60.pth'),
                model=cfg.model, miou=miou)


def _val_on_train(cfg):
    """Validate on the training images (what the teacher learned)."""
    cfg.val_dataloader.dataset.data_prefix = copy.deepcopy(
        cfg.train_dataloader.dataset.data_prefix)


@pytest.mark.slow
def test_trained_teacher_passes_with_its_own_validation_score(
        tiny_cfg, trained_teacher):
    assert trained_teacher['miou'] > 30  # it learned something
    cfg, _ = tiny_cfg('pspnet', same_shape=True)
    teacher = trained_teacher['model']
    cfg.model.teacher.checkpoint = trained_teacher['checkpoint']
    cfg.model.teacher.cfg_options = dict(model=dict(teacher, _delete_=True))
    _val_on_train(cfg)
    _hook(cfg, num_batches=4)
    runner = Runner.from_cfg(cfg)
    runner.train()
    assert runner.iter == 2  # trained after the check
    hook = _the_hook(runner)
    # the hook's teacher score is the teacher's own validation score
    assert hook.metrics['mIoU'] == pytest.approx(trained_teacher['miou'],
                                                 abs=0.01)


# ------------------------------------------------------- two processes
@pytest.mark.slow
@pytest.mark.parametrize('name', ['pspnet', 'retinanet'])
def test_both_processes_take_the_same_decision(name, tmp_path):
    """tools/dist_train.sh with 2 CPU processes (gloo): each scores its own
    validation image, the evaluator gathers both, and both processes stop
    with the same score (random teacher). What only the main process
    computes (mmseg's best-constant baseline, whether mmdet's teacher
    predicted any box) reaches the other too.
    """
    import re
    import sys
    tools = osp.join(osp.dirname(osp.dirname(osp.abspath(__file__))),
                     'test_tools')
    if tools not in sys.path:
        sys.path.insert(0, tools)
    from tools_support import (free_port, run_process_group, tool_env,
                               write_tiny_config)
    hook = dict(type='mmdistill.TeacherCheckHook', num_batches=1)
    config = write_tiny_config(name, str(tmp_path), val_images=2,
                               probe=False, hooks=[hook])
    code, output = run_process_group(
        ['bash', 'tools/dist_train.sh', config, '2', '--work-dir',
         str(tmp_path / 'work')],
        env=tool_env(port=free_port()), timeout=300)
    assert code is not None, 'the processes hung:\n' + output[-3000:]
    scored = re.findall(r'the teacher on (\d+) validation images', output)
    assert scored == ['2'], output[-3000:]  # logged once, both images
    assert code != 0
    key = 'mIoU' if name == 'pspnet' else 'coco/bbox_mAP'
    # each process's message (the two processes' tracebacks may interleave
    # between the exception's name and its message)
    assert output.count('TeacherCheckError') >= 2, output[-3000:]
    messages = re.findall(r'The teacher scores (.*)', output)
    assert len(messages) == 2 and messages[0] == messages[1], \
        output[-3000:]
    assert messages[0].startswith(f'{key} = ')
    assert ' on 2 validation images: at chance level (' in messages[0]
    assert ('most frequent class' if name == 'pspnet' else
            'predicted no box') in output


def test_precision_and_validation_messages(monkeypatch):
    """A bfloat16 overflow is told to drop teacher.dtype (not to use
    bfloat16); a config without validation names train.py's
    --no-validate, which removes it."""
    from types import SimpleNamespace

    from mmdistill.hooks import teacher_check
    hook = TeacherCheckHook()
    for dtype, fix in ((torch.bfloat16, 'Remove teacher.dtype (the teacher '
                        'then runs in float32).'),
                       (torch.float16, "Set teacher.dtype='bfloat16'")):
        monkeypatch.setattr(
            teacher_check, 'distiller_of', lambda runner, owner, d=dtype:
            SimpleNamespace(teacher_runner=SimpleNamespace(dtype=d)))
        hook.precision = {'stage4': (float('inf'), False)}
        with pytest.raises(TeacherCheckError) as err:
            hook._check_precision(None)
        assert fix in str(err.value)
    runner = SimpleNamespace(cfg=Config(dict(val_dataloader=None)))
    with pytest.raises(ValueError, match='tools/train.py --no-validate '
                       'removes them: drop that flag'):
        TeacherCheckHook._dataloader(runner)
