# CWD (channel-wise distillation): RetinaNet R50 matches the per-channel
# spatial distributions of RetinaNet X101-64x4d on the 5 FPN outputs, tau = 1,
# weight 10 per level. Settings of open-mmlab/mmrazor configs/distill/mmdet/
# cwd/cwd_fpn_retina_r101_retina_r50_1x_coco.py, with the X101 teacher.
_base_ = ['mmdet::retinanet/retinanet_r50_fpn_2x_coco.py']

model = dict(
    _delete_=True,
    type='mmdistill.SingleTeacherDistiller',
    student={{_base_.model}},
    teacher=dict(
        config='mmdet::retinanet/retinanet_x101-64x4d_fpn_2x_coco.py',
        checkpoint='https://download.openmmlab.com/mmdetection/v2.0/'
        'retinanet/retinanet_x101_64x4d_fpn_2x_coco/'
        'retinanet_x101_64x4d_fpn_2x_coco_20200131-bca068ab.pth'),
    distill=dict(
        fpn=dict(
            student='neck[{0-4}]',
            teacher='neck[{0-4}]',
            loss=dict(type='ChannelWiseDivergence', tau=1.0,
                      loss_weight=10))))

custom_hooks = [
    dict(type='mmdistill.StudentCheckpointHook'),
    # random generator states in the checkpoints: --resume continues exactly
    dict(type='mmdistill.RNGStateHook'),
]
custom_imports = dict(imports=['mmdistill'], allow_failed_imports=False)
