# LAD, layer-wise angular distillation (Liu et al., "Rethinking Knowledge
# Distillation with Raw Features for Semantic Segmentation", WACV 2024, Sec.
# 4.2, Eq. 5 and 9), for a ResNet-18 student (PSPNet or DeepLabV3 R18-d8) of
# the PSPNet R101-d8 teacher: the student's last backbone stage, aligned from
# 512 to 2048 channels by a 1x1 conv + BN + ReLU, learns the direction of the
# teacher's as one C*H*W vector, lambda_ad = 10, plus pixel-wise KD on the
# logits, lambda_kd = 10. A config copies it into its distiller with
# model = dict(distill={{_base_.distill}}).
distill = dict(
    backbone=dict(
        student='backbone.layer4',
        teacher='backbone.layer4',
        connector=dict(
            type='ConvConnector',
            in_channels=512,
            out_channels=2048,
            kernel_size=1,
            num_convs=1,
            norm_cfg=dict(type='SyncBN'),
            last_norm_act=True),
        loss=dict(type='AngularLoss', mode='layer', loss_weight=10)),
    logits=dict(
        student='decode_head.conv_seg',
        teacher='decode_head.conv_seg',
        loss=dict(type='PixelKLDivergence', tau=1.0, loss_weight=10)))
