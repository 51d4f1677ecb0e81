# Channel-wise MLP (Liu et al., "A Simple and Generic Framework for Feature
# Distillation via Channel-wise Transformation", ICCV-W 2023,
# arXiv:2303.13212), Faster R-CNN: the R50 student learns from Cascade Mask
# R-CNN X101-64x4d on the 4 FPN levels, alpha = 5e-7 (two-stage).
_base_ = [
    '../_base_/distillers/cascade-mask-rcnn-x101_faster-rcnn-r50_2x_coco.py',
]

model = dict(
    distill=dict(
        fpn=dict(
            student='neck.fpn_convs.{0-3}.conv',
            teacher='neck.fpn_convs.{0-3}.conv',
            connector=dict(
                type='MLPConnector', in_channels=256, out_channels=256),
            loss=dict(type='L2Loss', loss_weight=5e-7))))
