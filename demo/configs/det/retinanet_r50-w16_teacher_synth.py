# Teacher: RetinaNet with a ResNet-50 backbone (bottlenecks) at a quarter of
# the width (base 16: stages 64-512 channels), FPN of 32 channels.
_base_ = [
    'mmdet::_base_/models/retinanet_r50_fpn.py', '../_base_/synth_det.py'
]
model = dict(
    backbone=dict(
        depth=50, base_channels=16, frozen_stages=-1, norm_eval=False,
        init_cfg=None),
    neck=dict(in_channels=[64, 128, 256, 512], out_channels=32),
    bbox_head=dict(
        num_classes=6, in_channels=32, feat_channels=32, stacked_convs=2,
        anchor_generator=dict(octave_base_scale=3)))

# The teacher trains 2.5 times as long as the students.
max_iters = 1500
train_cfg = dict(max_iters=max_iters, val_interval=max_iters)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.1, by_epoch=False, begin=0,
         end=150),
    dict(type='CosineAnnealingLR', eta_min=1e-5, by_epoch=False, begin=150,
         end=max_iters),
]
default_hooks = dict(checkpoint=dict(interval=max_iters))
