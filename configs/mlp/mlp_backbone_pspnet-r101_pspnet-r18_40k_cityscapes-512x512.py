# The Cityscapes recipe of the channel-wise MLP paper (Liu et al., ICCV-W
# 2023, Sec. 4.3, Table 4) for the homogeneous MLP config: PSPNet R18-d8
# learns from PSPNet R101-d8 (its 40k checkpoint, 78.34 mIoU) on 512 x 512
# crops for 40k iterations (8 GPUs x 2 images), alpha = 2e-5. The teacher
# keeps its own 512x1024 test settings.
_base_ = ['./mlp_backbone_pspnet-r101_pspnet-r18_80k_cityscapes-512x1024.py']

crop_size = (512, 512)
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations'),
    dict(
        type='RandomResize',
        scale=(2048, 1024),
        ratio_range=(0.5, 2.0),
        keep_ratio=True),
    dict(type='RandomCrop', crop_size=crop_size, cat_max_ratio=0.75),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PhotoMetricDistortion'),
    dict(type='PackSegInputs')
]
train_dataloader = dict(dataset=dict(pipeline=train_pipeline))
data_preprocessor = dict(size=crop_size)

# the teacher's 40k checkpoint (78.34 mIoU), with the config it was
# released with
teacher = dict(
    config='mmseg::pspnet/pspnet_r101-d8_4xb2-40k_cityscapes-512x1024.py',
    checkpoint='https://download.openmmlab.com/mmsegmentation/v0.5/'
    'pspnet/pspnet_r101-d8_512x1024_40k_cityscapes/'
    'pspnet_r101-d8_512x1024_40k_cityscapes_20200604_232751-467e7cf4.pth')
model = dict(
    student=dict(data_preprocessor=dict(size=crop_size)), teacher=teacher)

param_scheduler = [
    dict(
        type='PolyLR',
        eta_min=1e-4,
        power=0.9,
        begin=0,
        end=40000,
        by_epoch=False)
]
train_cfg = dict(max_iters=40000, val_interval=4000)
default_hooks = dict(checkpoint=dict(interval=4000))
