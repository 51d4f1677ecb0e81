# Teacher: PSPNet with a ResNet-50-d8 backbone (ResNetV1c, 4 stages of
# bottlenecks) at a quarter of the width (base 16: stages 64-512 channels).
_base_ = ['mmseg::_base_/models/pspnet_r50-d8.py', '../_base_/synth_seg.py']
norm_cfg = dict(type='BN', requires_grad=True)
model = dict(
    pretrained=None,
    data_preprocessor=dict(size={{_base_.crop_size}}),
    backbone=dict(
        depth=50, stem_channels=16, base_channels=16, norm_cfg=norm_cfg),
    decode_head=dict(
        in_channels=512, channels=64, num_classes=7, norm_cfg=norm_cfg),
    auxiliary_head=dict(
        in_channels=256, channels=32, num_classes=7, norm_cfg=norm_cfg))

# The teacher trains twice as long as the students.
max_iters = 800
train_cfg = dict(max_iters=max_iters, val_interval=max_iters)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.1, by_epoch=False, begin=0,
         end=80),
    dict(type='PolyLR', power=0.9, eta_min=1e-5, by_epoch=False, begin=80,
         end=max_iters),
]
default_hooks = dict(checkpoint=dict(interval=max_iters))
