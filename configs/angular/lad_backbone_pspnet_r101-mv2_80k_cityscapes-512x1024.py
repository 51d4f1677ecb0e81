# LAD (layer-wise angular distillation, paper 002): PSPNet MobileNetV2-d8
# learns the direction of PSPNet R101-d8's last backbone stage as one C*H*W
# vector, lambda_ad = 10, after a 1x1 conv + BN + ReLU aligns 320 -> 2048
# channels, plus pixel-wise KD on the logits, lambda_kd = 10 (Sec. 4.2).
_base_ = [
    'mmseg::mobilenet_v2/'
    'mobilenet-v2-d8_pspnet_4xb2-80k_cityscapes-512x1024.py'
]

model = dict(
    _delete_=True,
    type='mmdistill.SingleTeacherDistiller',
    student={{_base_.model}},
    teacher=dict(
        config='mmseg::pspnet/pspnet_r101-d8_4xb2-80k_cityscapes-512x1024.py',
        checkpoint='https://download.openmmlab.com/mmsegmentation/v0.5/'
        'pspnet/pspnet_r101-d8_512x1024_80k_cityscapes/'
        'pspnet_r101-d8_512x1024_80k_cityscapes_20200606_112211-e1e1100f.pth'),
    distill=dict(
        backbone=dict(
            student='backbone.layer7',
            teacher='backbone.layer4',
            connector=dict(
                type='ConvConnector',
                in_channels=320,
                out_channels=2048,
                kernel_size=1,
                num_convs=1,
                norm_cfg=dict(type='SyncBN'),
                last_norm_act=True),
            loss=dict(type='AngularLoss', mode='layer', loss_weight=10)),
        logits=dict(
            student='decode_head.conv_seg',
            teacher='decode_head.conv_seg',
            loss=dict(type='PixelKLDivergence', tau=1.0, loss_weight=10))))

custom_hooks = [
    dict(type='mmdistill.StudentCheckpointHook'),
    # random generator states in the checkpoints: --resume continues exactly
    dict(type='mmdistill.RNGStateHook'),
]
custom_imports = dict(imports=['mmdistill'], allow_failed_imports=False)
