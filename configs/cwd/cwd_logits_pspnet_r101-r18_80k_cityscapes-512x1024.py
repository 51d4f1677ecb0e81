# CWD (channel-wise distillation) on the logits: PSPNet R18-d8 matches the
# per-class spatial distributions of PSPNet R101-d8 (decode_head.conv_seg),
# tau = 1, weight 5. Settings of open-mmlab/mmrazor configs/distill/mmseg/cwd/
# cwd_logits_pspnet_r101_d8_pspnet_r18_d8_512x1024_cityscapes_80k.py
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
        logits=dict(
            student='decode_head.conv_seg',
            teacher='decode_head.conv_seg',
            loss=dict(type='ChannelWiseDivergence', tau=1.0,
                      loss_weight=5))))

custom_hooks = [
    dict(type='mmdistill.StudentCheckpointHook'),
    # random generator states in the checkpoints: --resume continues exactly
    dict(type='mmdistill.RNGStateHook'),
]
custom_imports = dict(imports=['mmdistill'], allow_failed_imports=False)
