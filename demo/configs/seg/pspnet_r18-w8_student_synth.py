# Student: PSPNet with a ResNet-18-d8 backbone (ResNetV1c, basic blocks) at
# an eighth of the width (base 8: stages 8-64 channels), trained alone.
_base_ = ['mmseg::_base_/models/pspnet_r50-d8.py', '../_base_/synth_seg.py']
norm_cfg = dict(type='BN', requires_grad=True)
model = dict(
    pretrained=None,
    data_preprocessor=dict(size={{_base_.crop_size}}),
    backbone=dict(
        depth=18, stem_channels=8, base_channels=8, norm_cfg=norm_cfg),
    decode_head=dict(
        in_channels=64, channels=16, num_classes=7, norm_cfg=norm_cfg),
    auxiliary_head=dict(
        in_channels=32, channels=16, num_classes=7, norm_cfg=norm_cfg))
