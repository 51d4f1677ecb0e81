# Student: ResNet-18 (basic blocks) at a sixteenth of the width (base 4:
# stages 4-32 channels, 0.04 M parameters), ImageNet stem. Trained alone.
_base_ = ['../_base_/synth_cls.py']
model = dict(
    type='ImageClassifier',
    data_preprocessor={{_base_.data_preprocessor}},
    backbone=dict(
        type='ResNet', depth=18, stem_channels=4, base_channels=4,
        num_stages=4, out_indices=(3, ), style='pytorch'),
    neck=dict(type='GlobalAveragePooling'),
    head=dict(
        type='LinearClsHead', num_classes=6, in_channels=32,
        loss=dict(type='CrossEntropyLoss', loss_weight=1.0)))
