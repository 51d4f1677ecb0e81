# Paper 001 (channel-wise MLP), heterogeneous segmentation: DeepLabV3 R18-d8
# learns from PSPNet R101-d8 on the backbone's last stage, alpha = 1e-5.
_base_ = ['mmseg::deeplabv3/deeplabv3_r18-d8_4xb2-80k_cityscapes-512x1024.py']
custom_imports = dict(imports=['mmdistill'], allow_failed_imports=False)

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
        stage4=dict(
            student='backbone.layer4',
            teacher='backbone.layer4',
            connector=dict(
                type='MLPConnector', in_channels=512, out_channels=2048),
            loss=dict(type='L2Loss', loss_weight=1e-5))))

custom_hooks = [
    dict(type='mmdistill.StudentCheckpointHook'),
    # random generator states in the checkpoints: --resume continues exactly
    dict(type='mmdistill.RNGStateHook'),
]
