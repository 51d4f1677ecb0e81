# Paper 001 (channel-wise MLP), RetinaNet: R50 student learns from X101-64x4d
# on every FPN level (5), one MLP per level, alpha = 2e-5 (one-stage).
_base_ = ['mmdet::retinanet/retinanet_r50_fpn_2x_coco.py']
custom_imports = dict(imports=['mmdistill'], allow_failed_imports=False)

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
            student='neck.fpn_convs.{0-4}.conv',
            teacher='neck.fpn_convs.{0-4}.conv',
            connector=dict(
                type='MLPConnector', in_channels=256, out_channels=256),
            loss=dict(type='L2Loss', loss_weight=2e-5))))

custom_hooks = [
    dict(type='mmdistill.StudentCheckpointHook'),
    # random generator states in the checkpoints: --resume continues exactly
    dict(type='mmdistill.RNGStateHook'),
]
