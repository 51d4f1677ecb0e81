# Teacher: ResNet-18 (basic blocks) at half the width (base 32: stages
# 32-256 channels), ImageNet stem (stride-2 conv and max-pooling).
_base_ = ['../_base_/synth_cls.py']
model = dict(
    type='ImageClassifier',
    data_preprocessor={{_base_.data_preprocessor}},
    backbone=dict(
        type='ResNet', depth=18, stem_channels=32, base_channels=32,
        num_stages=4, out_indices=(3, ), style='pytorch'),
    neck=dict(type='GlobalAveragePooling'),
    head=dict(
        type='LinearClsHead', num_classes=6, in_channels=256,
        loss=dict(type='CrossEntropyLoss', loss_weight=1.0)))

# The teacher trains 1.5 times as long as the students.
max_iters = 1500
train_cfg = dict(max_iters=max_iters, val_interval=max_iters)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.1, by_epoch=False, begin=0,
         end=150),
    dict(type='CosineAnnealingLR', eta_min=1e-5, by_epoch=False, begin=150,
         end=max_iters),
]
default_hooks = dict(checkpoint=dict(interval=max_iters))
