# CWD (channel-wise distillation) on the logits, heterogeneous: DeepLabV3
# R18-d8 matches the per-class spatial distributions of PSPNet R101-d8
# (decode_head.conv_seg of both), tau = 1, weight 5: the PSPNet setting of
# open-mmlab/mmrazor configs/distill/mmseg/cwd/ applied to DeepLabV3.
_base_ = ['mmseg::deeplabv3/deeplabv3_r18-d8_4xb2-80k_cityscapes-512x1024.py']

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
