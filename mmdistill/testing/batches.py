"""Random batches shaped as mmdet / mmseg / mmpretrain dataloaders yield
them (uint8 images and data samples with ground truth), before the data
preprocessor: for the config checks and the overhead benchmark."""
from typing import Tuple

import torch


def _images(gen: torch.Generator, size: Tuple[int, int],
            batch: int) -> list:
    h, w = size
    return [torch.randint(0, 256, (3, h, w), generator=gen,
                          dtype=torch.uint8) for _ in range(batch)]


def det_batch(size: Tuple[int, int] = (128, 128), batch: int = 1,
              num_classes: int = 80, seed: int = 0) -> dict:
    """Images with two ground-truth boxes each (``DetDataSample``)."""
    from mmdet.structures import DetDataSample
    from mmengine.structures import InstanceData
    gen = torch.Generator().manual_seed(seed)
    h, w = size
    inputs, samples = _images(gen, size, batch), []
    for i in range(batch):
        sample = DetDataSample(
            metainfo=dict(img_id=i, img_shape=(h, w), ori_shape=(h, w),
                          scale_factor=(1.0, 1.0), flip=False))
        sample.gt_instances = InstanceData(
            bboxes=torch.tensor([[8.0, 10.0, 0.55 * w, 0.7 * h],
                                 [0.4 * w, 0.2 * h, w - 4.0, h - 6.0]]),
            labels=torch.tensor([0, 7 % num_classes]))
        sample.ignored_instances = InstanceData(
            bboxes=torch.zeros(0, 4), labels=torch.zeros(0).long())
        samples.append(sample)
    return dict(inputs=inputs, data_samples=samples)


def seg_batch(size: Tuple[int, int] = (128, 128), batch: int = 2,
              num_classes: int = 19, seed: int = 0) -> dict:
    """Images with label maps holding some ignore pixels
    (``SegDataSample``)."""
    from mmengine.structures import PixelData
    from mmseg.structures import SegDataSample
    gen = torch.Generator().manual_seed(seed)
    h, w = size
    inputs, samples = _images(gen, size, batch), []
    for _ in range(batch):
        labels = torch.randint(0, num_classes, (1, h, w), generator=gen)
        labels[:, :h // 8] = 255
        sample = SegDataSample(
            metainfo=dict(img_shape=(h, w), ori_shape=(h, w),
                          pad_shape=(h, w)))
        sample.gt_sem_seg = PixelData(data=labels)
        samples.append(sample)
    return dict(inputs=inputs, data_samples=samples)


def cls_batch(size: Tuple[int, int] = (64, 64), batch: int = 2,
              num_classes: int = 1000, seed: int = 0) -> dict:
    """Images with a label each (mmpretrain ``DataSample``); 2 or more
    images suit preprocessors that apply Mixup/CutMix."""
    from mmpretrain.structures import DataSample
    gen = torch.Generator().manual_seed(seed)
    h, w = size
    inputs, samples = _images(gen, size, batch), []
    for i in range(batch):
        sample = DataSample(metainfo=dict(img_shape=(h, w),
                                          ori_shape=(h, w)))
        samples.append(sample.set_gt_label((7 * i + 3) % num_classes))
    return dict(inputs=inputs, data_samples=samples)


BATCHES = dict(det=det_batch, seg=seg_batch, cls=cls_batch)
KIND_OF_SCOPE = dict(mmdet='det', mmseg='seg', mmpretrain='cls')


def random_batch(kind: str, size: Tuple[int, int], batch: int = 0,
                 num_classes: int = 0, seed: int = 0) -> dict:
    """A batch of ``kind`` ``'det'``, ``'seg'`` or ``'cls'`` (0 for
    ``batch`` / ``num_classes`` keeps each kind's default)."""
    if kind not in BATCHES:
        raise ValueError(f'kind must be one of {sorted(BATCHES)}, got '
                         f'{kind!r}.')
    kwargs = dict(size=tuple(size), seed=seed)
    if batch:
        kwargs['batch'] = batch
    if num_classes:
        kwargs['num_classes'] = num_classes
    return BATCHES[kind](**kwargs)
