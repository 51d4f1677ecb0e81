"""Shrink real mmdet/mmseg/mmpretrain configs so they train in seconds on a
CPU.

Used by the test suite and the quick checks of the shipped configs: the model
keeps its type and structure (same backbone family, neck, heads), with fewer
layers and channels, no pretrained download, small inputs and a tiny
generated dataset.
"""
import copy
from typing import Any, Dict, Optional, Tuple

from mmengine.config import Config, ConfigDict


def _walk(node: Any, fn) -> None:
    """Call ``fn`` on every dict inside nested dicts/lists."""
    if isinstance(node, dict):
        fn(node)
        for value in node.values():
            _walk(value, fn)
    elif isinstance(node, (list, tuple)):
        for value in node:
            _walk(value, fn)


def resnet_expansion(depth: int) -> int:
    """Output channels of a ResNet block over its base channels: 1 for
    basic blocks (ResNet-18/34), 4 for bottlenecks."""
    return 1 if depth in (18, 34) else 4


def shrink_resnet(backbone: dict, width: int, depth: int = 18) -> list:
    """ResNet / ResNetV1c / ResNeXt -> ResNet-``depth`` of base ``width``
    (a ResNet-18/34 drops deformable convolutions and plugins, which its
    basic blocks do not take); returns the stage output channels."""
    if backbone.get('type') in ('ResNeXt', 'mmdet.ResNeXt'):
        backbone['type'] = 'ResNet'
        backbone.pop('groups', None)
        backbone.pop('base_width', None)
    backbone.update(depth=depth, base_channels=width, init_cfg=None)
    if depth in (18, 34):  # mmdet's BasicBlock takes no DCN nor plugins
        for key in ('dcn', 'stage_with_dcn', 'plugins'):
            backbone.pop(key, None)
    if 'stem_channels' in backbone or backbone.get('type', '').endswith(
            'V1c'):
        backbone['stem_channels'] = width
    return [width * resnet_expansion(depth) * 2**i for i in range(4)]


def shrink_detector(model: dict, width: int = 8, fpn_channels: int = 16,
                    depth: int = 18) -> dict:
    """Shrink a mmdet detector config in place (ResNet + FPN + heads)."""
    stages = shrink_resnet(model['backbone'], width, depth)
    neck = model.get('neck')
    if neck is not None:
        neck['in_channels'] = stages[-len(neck['in_channels']):]
        neck['out_channels'] = fpn_channels
    for key in ('bbox_head', 'rpn_head'):
        head = model.get(key)
        if head is not None:
            head['in_channels'] = fpn_channels
            if 'feat_channels' in head:
                head['feat_channels'] = fpn_channels
            if 'stacked_convs' in head:
                head['stacked_convs'] = 1
    roi = model.get('roi_head')
    if roi is not None:
        roi['bbox_roi_extractor']['out_channels'] = fpn_channels
        heads = roi['bbox_head']
        for head in heads if isinstance(heads, list) else [heads]:
            head['in_channels'] = fpn_channels
            head['fc_out_channels'] = 4 * fpn_channels
        if roi.get('mask_roi_extractor'):
            roi['mask_roi_extractor']['out_channels'] = fpn_channels
            masks = roi['mask_head']
            for head in masks if isinstance(masks, list) else [masks]:
                head['in_channels'] = fpn_channels
                head['conv_out_channels'] = fpn_channels
    return model


def shrink_segmentor(model: dict, width: int = 8, depth: int = 18,
                     crop: Tuple[int, int] = (64, 64)) -> dict:
    """Shrink a mmseg encoder-decoder config in place."""
    model['pretrained'] = None
    backbone = model['backbone']
    if backbone.get('type') == 'MobileNetV2':
        backbone.update(widen_factor=0.25, init_cfg=None)
        # out_indices (1, 2, 4, 6) of mmseg's MobileNetV2 configs: 24, 32,
        # 96, 320 channels, times 0.25 rounded up to multiples of 8
        stages = [8, 8, 24, 80]
    else:
        stages = shrink_resnet(backbone, width, depth)
    heads = [model['decode_head']]
    aux = model.get('auxiliary_head')
    heads += aux if isinstance(aux, list) else ([aux] if aux else [])
    for head in heads:
        index = head.get('in_index', -1)
        if isinstance(index, int):
            head['in_channels'] = stages[index]
        head['channels'] = max(8, stages[-1] // 4)
        if 'c1_in_channels' in head:  # DepthwiseSeparableASPPHead
            head['c1_in_channels'] = stages[0]
            head['c1_channels'] = 8
    if model.get('data_preprocessor') is not None:
        model['data_preprocessor']['size'] = crop
    return model


def _shrink_pipeline(node: Any, size: Tuple[int, int]) -> None:
    """Replace image scales and crops in pipelines by ``size`` (w, h)."""

    def fix(d: dict) -> None:
        kind = d.get('type', '')
        if kind in ('Resize', 'RandomResize', 'RandomChoiceResize'):
            if kind == 'RandomChoiceResize':
                d['scales'] = [size]
            else:
                d['scale'] = size
            d.pop('scale_factor', None)
        elif kind == 'RandomCrop':
            d['crop_size'] = (size[1], size[0])
        elif kind == 'MultiScaleFlipAug':
            d['scale'] = size

    _walk(node, fix)


def tiny_runtime(cfg: Config,
                 work_dir: str,
                 data_root: str,
                 size: Tuple[int, int],
                 batch_size: int = 2) -> Config:
    """Point every dataloader at ``data_root``, shrink inputs to ``size``
    (w, h), use no worker processes, log every iteration."""
    for key in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        loader = cfg.get(key)
        if loader is None:
            continue
        loader.batch_size = batch_size if key == 'train_dataloader' else 1
        loader.num_workers = 0
        loader.persistent_workers = False
        dataset = loader.dataset
        while 'dataset' in dataset:  # RepeatDataset, ConcatDataset wrappers
            dataset = dataset.dataset
        dataset.data_root = data_root
        _shrink_pipeline(dataset.get('pipeline'), size)
    for key in ('train_pipeline', 'test_pipeline', 'tta_pipeline'):
        if key in cfg:
            _shrink_pipeline(cfg[key], size)
    models = [cfg.get('data_preprocessor', None)]
    model = cfg.get('model', {})
    models += [m.get('data_preprocessor') for m in (model, model.get(
        'student', {})) if isinstance(m, dict)]
    for preprocessor in models:  # the runner's, the model's, the student's
        if preprocessor and preprocessor.get('size', None) is not None:
            preprocessor['size'] = (size[1], size[0])
    cfg.work_dir = work_dir
    cfg.default_hooks.logger.interval = 1
    cfg.default_hooks.pop('visualization', None)
    cfg.env_cfg = ConfigDict(
        cudnn_benchmark=False,
        mp_cfg=dict(mp_start_method='fork', opencv_num_threads=0),
        dist_cfg=dict(backend='gloo'))
    return cfg


def tiny_detection(cfg: Config,
                   work_dir: str,
                   data_root: str,
                   size: Tuple[int, int] = (128, 96),
                   epochs: int = 1) -> Config:
    """An mmdet COCO config: data from ``write_coco_layout(data_root)``."""
    tiny_runtime(cfg, work_dir, data_root, size)
    for key in ('val_evaluator', 'test_evaluator'):
        evaluator = cfg.get(key)
        if evaluator is not None and 'ann_file' in evaluator:
            evaluator.ann_file = (
                f'{data_root}/annotations/instances_val2017.json')
    for key in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        dataset = cfg[key].dataset
        while 'dataset' in dataset:
            dataset = dataset.dataset
        dataset.pop('filter_cfg', None)
    cfg.train_cfg.max_epochs = epochs
    cfg.train_cfg.val_interval = 1
    cfg.default_hooks.checkpoint.interval = 1
    return cfg


def tiny_segmentation(cfg: Config,
                      work_dir: str,
                      data_root: str,
                      size: Tuple[int, int] = (64, 64),
                      iters: int = 2) -> Config:
    """An mmseg Cityscapes config: data from
    ``write_cityscapes_layout(data_root)``; ``iters`` iterations, validated
    and saved at the end."""
    tiny_runtime(cfg, work_dir, data_root, size)
    cfg.train_cfg.max_iters = iters
    cfg.train_cfg.val_interval = iters
    cfg.default_hooks.checkpoint.interval = iters
    return cfg


def shrink_classifier(model: dict, width: int = 8,
                      size: int = 32) -> dict:
    """Shrink an mmpretrain ``ImageClassifier`` config in place, keeping
    its depth, classes and module names (so taps stay valid):

    * ``VisionTransformer`` (ViT, DeiT): the same number of layers and
      heads (taps such as ``backbone.layers.11.attn.qkv`` and the heads a
      loss names stay valid), ``width`` channels per head, ``size`` x
      ``size`` inputs;
    * ``ResNet`` / ``ResNetV1c`` / ``ResNetV1d``: ``width`` stem and base
      channels;
    * ``MobileNetV2``: widen factor 0.25 (``width`` is not used).

    Raises:
        ValueError: for another backbone type, naming it.
    """
    backbone = model['backbone']
    kind = backbone.get('type', '')
    if kind in ('ResNet', 'ResNetV1c', 'ResNetV1d', 'mmpretrain.ResNet'):
        backbone.update(stem_channels=width, base_channels=width,
                        init_cfg=None)
        model['head']['in_channels'] = width * resnet_expansion(
            backbone.get('depth', 50)) * 8
        model.pop('pretrained', None)
        return model
    if kind in ('MobileNetV2', 'mmpretrain.MobileNetV2'):
        backbone.update(widen_factor=0.25, init_cfg=None)  # 1280 outputs
        model.pop('pretrained', None)
        return model
    if kind not in ('VisionTransformer', 'DistilledVisionTransformer',
                    'mmpretrain.VisionTransformer',
                    'mmpretrain.DistilledVisionTransformer'):
        raise ValueError(
            f'shrink_classifier shrinks ViT/DeiT, ResNet and MobileNet-V2 '
            f'classifiers, not a {kind!r} backbone.')
    from mmpretrain.models import VisionTransformer
    arch = backbone.get('arch', 'base')
    if isinstance(arch, str):
        arch = VisionTransformer.arch_zoo[arch.lower()]
    embed_dims = arch['num_heads'] * width
    backbone.update(
        arch=dict(
            embed_dims=embed_dims,
            num_layers=arch['num_layers'],
            num_heads=arch['num_heads'],
            feedforward_channels=4 * embed_dims),
        img_size=size,
        init_cfg=None)
    head = model.get('head')
    if head is not None and 'in_channels' in head:
        head['in_channels'] = embed_dims
    model.pop('pretrained', None)
    return model


def _shrink_classification_pipeline(node: Any, size: int) -> None:
    """Replace the crops and resizes of mmpretrain pipelines by ``size``."""

    def fix(d: dict) -> None:
        kind = d.get('type', '')
        if kind in ('RandomResizedCrop', 'ResizeEdge', 'Resize'):
            d['scale'] = size
        elif kind == 'CenterCrop':
            d['crop_size'] = size

    _walk(node, fix)


def tiny_classification(cfg: Config,
                        work_dir: str,
                        data_root: str,
                        size: int = 32,
                        epochs: int = 1) -> Config:
    """An mmpretrain ImageNet config: data from
    :func:`write_imagenet_layout` (``data_root``), ``size`` x ``size``
    crops, ``epochs`` epochs, validated and saved at the end of each."""
    tiny_runtime(cfg, work_dir, data_root, (size, size))
    for key in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        loader = cfg.get(key)
        if loader is not None:
            _shrink_classification_pipeline(loader.dataset.get('pipeline'),
                                            size)
    for key in ('train_pipeline', 'test_pipeline'):
        if key in cfg:
            _shrink_classification_pipeline(cfg[key], size)
    cfg.train_cfg.max_epochs = epochs
    cfg.train_cfg.val_interval = 1
    cfg.default_hooks.checkpoint.interval = 1
    # epoch-based schedulers (warm-up 20 epochs, then cosine) cut to the run
    schedulers = cfg.get('param_scheduler') or []
    if isinstance(schedulers, dict):
        schedulers = [schedulers]
    kept = []
    for scheduler in schedulers:
        if scheduler.get('begin', 0) < epochs:
            if scheduler.get('end', epochs) > epochs:
                scheduler['end'] = epochs
            kept.append(scheduler)
    if schedulers:
        cfg.param_scheduler = kept
    return cfg


def write_imagenet_layout(root: str,
                          counts: Optional[Dict[str, int]] = None,
                          size: int = 40,
                          seed: int = 0) -> str:
    """Write random images in mmpretrain's ImageNet layout:
    ``train/<wnid>/<name>.JPEG`` and ``val/<name>.JPEG`` listed with their
    class index in ``meta/train.txt`` and ``meta/val.txt``."""
    import os

    import numpy as np
    from PIL import Image
    counts = counts or dict(train=4, val=2)
    rng = np.random.default_rng(seed)
    os.makedirs(f'{root}/meta', exist_ok=True)
    for split, count in counts.items():
        lines = []
        for i in range(count):
            label = (7 * i) % 1000
            name = f'n{label:08d}/img_{i}.JPEG' if split == 'train' else \
                f'ILSVRC2012_{split}_{i:08d}.JPEG'
            path = f'{root}/{split}/{name}'
            os.makedirs(os.path.dirname(path), exist_ok=True)
            pixels = rng.integers(0, 256, (size, size + 8, 3), np.uint8)
            Image.fromarray(pixels).save(path, format='JPEG')
            lines.append(f'{name} {label}\n')
        with open(f'{root}/meta/{split}.txt', 'w') as f:
            f.writelines(lines)
    return root


def tiny_model(model: dict, kind: str, **kwargs) -> dict:
    """Shrink a copy of a model config; ``kind`` is 'det', 'seg' or 'cls'
    (an mmpretrain classifier, see :func:`shrink_classifier`)."""
    model = copy.deepcopy(model)
    if kind == 'det':
        return shrink_detector(model, **kwargs)
    if kind == 'seg':
        return shrink_segmentor(model, **kwargs)
    if kind == 'cls':
        return shrink_classifier(model, **kwargs)
    raise ValueError(f'kind must be "det", "seg" or "cls", got {kind!r}')


def teacher_overrides(model: dict) -> Dict[str, Any]:
    """``cfg_options`` for ``teacher=dict(...)`` that replace the teacher
    config's model by ``model`` (a shrunken copy)."""
    return {'model': dict(model, _delete_=True)}


def random_checkpoint(model_cfg: dict, path: str,
                      scope: Optional[str] = None, seed: int = 0,
                      init: bool = True) -> str:
    """Build ``model_cfg`` with random weights and save its state dict.
    ``init=False`` skips ``init_weights()`` (which downloads the ImageNet
    weights a stock config starts its backbone from)."""
    import torch
    from mmengine.registry import MODELS, DefaultScope
    torch.manual_seed(seed)
    with DefaultScope.overwrite_default_scope(scope):
        model = MODELS.build(copy.deepcopy(model_cfg))
    if init:
        model.init_weights()
    torch.save(dict(state_dict=model.state_dict(), meta=dict()), path)
    return path


def use_random_teacher(cfg: Config, path: str) -> str:
    """Point a distillation config's teacher at a checkpoint of random
    weights written to ``path`` (built at the config's size, without the
    ImageNet download of ``init_weights``): for timing and visualisation
    without network access."""
    from mmdistill.utils.config import load_config
    teacher = cfg.model.teacher
    tcfg = load_config(teacher.config)
    if teacher.get('cfg_options'):
        tcfg.merge_from_dict(teacher.cfg_options)
    teacher.checkpoint = random_checkpoint(
        tcfg.model, path, scope=tcfg.get('default_scope'),
        init=False)
    return teacher.checkpoint


def _last_channels(model: dict, det: bool) -> int:
    """Channels of what a shrunken model's pairs tap: its FPN levels
    (detection), else its last backbone stage."""
    if det:
        return model['neck']['out_channels']
    backbone = model['backbone']
    if str(backbone.get('type')).split('.')[-1] == 'MobileNetV2':
        return 80  # 320 x 0.25 (see shrink_segmentor)
    return backbone['base_channels'] * resnet_expansion(
        backbone.get('depth')) * 8


def shrink_distiller(cfg: Config, kind: str,
                     same_shape: bool = False) -> Tuple[dict, Optional[str]]:
    """Shrink the student and teacher of a distillation config in place.

    The student gets width 8 (FPN 16), the teacher width 16 (FPN 32), or the
    student's own shape with ``same_shape``; every connector's
    ``in_channels``/``out_channels`` follows (FPN levels for ``'det'``, the
    last backbone stage for ``'seg'``). An untrained detector scores about
    0.01, so its test-time score threshold becomes 0 to keep boxes.

    Returns:
        tuple: the teacher model config (for ``teacher.cfg_options`` and
        :func:`random_checkpoint`) and the teacher's registry scope.
    """
    from mmdistill.utils.config import load_config
    det = kind == 'det'
    fpn = {'fpn_channels': 16} if det else {}
    cfg.model.student = tiny_model(cfg.model.student, kind, width=8, **fpn)
    teacher_cfg = load_config(cfg.model.teacher.config)
    if same_shape:
        teacher = copy.deepcopy(cfg.model.student)
        teacher['data_preprocessor'] = teacher_cfg.model.data_preprocessor
    else:
        fpn = {'fpn_channels': 32} if det else {}
        teacher = tiny_model(teacher_cfg.model, kind, width=16, **fpn)
    channels = (_last_channels(cfg.model.student, det),
                _last_channels(teacher, det))
    for pair in cfg.model.distill.values():
        connector = pair.get('connector')
        if connector is not None:
            connector.in_channels, connector.out_channels = channels
    if det:
        test_cfg = cfg.model.student.test_cfg
        for stage in [test_cfg] + [v for v in test_cfg.values()
                                   if isinstance(v, dict)]:
            if 'score_thr' in stage:
                stage.score_thr = 0.0
                stage.max_per_img = 20
    return teacher, teacher_cfg.default_scope
