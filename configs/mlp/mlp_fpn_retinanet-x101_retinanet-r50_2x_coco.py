# Channel-wise MLP (Liu et al., "A Simple and Generic Framework for Feature
# Distillation via Channel-wise Transformation", ICCV-W 2023,
# arXiv:2303.13212), RetinaNet: the R50 student learns from X101-64x4d on every
# FPN level (5), one MLP per level, alpha = 2e-5 (one-stage).
_base_ = ['../_base_/distillers/retinanet-x101_retinanet-r50_2x_coco.py']

model = dict(
    distill=dict(
        fpn=dict(
            student='neck.fpn_convs.{0-4}.conv',
            teacher='neck.fpn_convs.{0-4}.conv',
            connector=dict(
                type='MLPConnector', in_channels=256, out_channels=256),
            loss=dict(type='L2Loss', loss_weight=2e-5))))
