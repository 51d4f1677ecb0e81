# TaT (target-aware transformer, paper 000): PSPNet R18-d8 is reconfigured by
# attention keyed on PSPNet R101-d8's last backbone stage and matches it with
# the mean squared error, twice: inside 64 groups of a 16 x 16 patch grid
# (patch-group, weight 0.1) and on a 32 x 32 anchor grid (anchor-point,
# weight 0.04). Weights alpha*beta and alpha*gamma of sihaoevery/TaT-seg
# train_voc_resnet18.sh (alpha 0.1, beta 1.0, gamma 0.4, n = m = 16, 64 heads).
_base_ = ['mmseg::pspnet/pspnet_r18-d8_4xb2-80k_cityscapes-512x1024.py']

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
        patch_group=dict(
            student='backbone.layer4',
            teacher='backbone.layer4',
            connector=dict(
                type='TaTConnector',
                in_channels=512,
                out_channels=2048,
                mode='patch_group',
                patch_grid=(16, 16),
                num_groups=64,
                norm_cfg=dict(type='SyncBN')),
            loss=dict(type='MSELoss', loss_weight=0.1)),
        anchor=dict(
            student='backbone.layer4',
            teacher='backbone.layer4',
            connector=dict(
                type='TaTConnector',
                in_channels=512,
                out_channels=2048,
                mode='anchor',
                anchor_size=(32, 32),
                anchor_output='anchor',
                norm_cfg=dict(type='SyncBN')),
            loss=dict(type='MSELoss', loss_weight=0.04))))

custom_hooks = [
    dict(type='mmdistill.StudentCheckpointHook'),
    # random generator states in the checkpoints: --resume continues exactly
    dict(type='mmdistill.RNGStateHook'),
]
custom_imports = dict(imports=['mmdistill'], allow_failed_imports=False)
