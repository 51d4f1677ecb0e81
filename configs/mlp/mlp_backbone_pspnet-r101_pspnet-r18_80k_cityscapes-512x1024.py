# Channel-wise MLP (Liu et al., "A Simple and Generic Framework for Feature
# Distillation via Channel-wise Transformation", ICCV-W 2023,
# arXiv:2303.13212), homogeneous segmentation: PSPNet R18-d8 learns from PSPNet
# R101-d8 on the backbone's last stage (512 -> 2048 channels), alpha = 2e-5.
_base_ = [
    '../_base_/distillers/pspnet-r101_pspnet-r18_80k_cityscapes-512x1024.py',
]

model = dict(
    distill=dict(
        stage4=dict(
            student='backbone.layer4',
            teacher='backbone.layer4',
            connector=dict(
                type='MLPConnector', in_channels=512, out_channels=2048),
            loss=dict(type='L2Loss', loss_weight=2e-5))))
