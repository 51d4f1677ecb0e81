# LAD (see lad_backbone_pspnet-r101_r18.py) for a MobileNetV2-d8 student
# (PSPNet or DeepLabV3): its last backbone stage is backbone.layer7, 320
# channels aligned to the teacher's 2048.
_base_ = ['./lad_backbone_pspnet-r101_r18.py']

distill = dict(
    backbone=dict(
        student='backbone.layer7', connector=dict(in_channels=320)))
