# Paper 001 (channel-wise MLP), Faster R-CNN: R50 student learns from Cascade
# Mask R-CNN X101-64x4d on the 4 FPN levels, alpha = 5e-7 (two-stage).
_base_ = ['mmdet::faster_rcnn/faster-rcnn_r50_fpn_2x_coco.py']
custom_imports = dict(imports=['mmdistill'], allow_failed_imports=False)

model = dict(
    _delete_=True,
    type='mmdistill.SingleTeacherDistiller',
    student={{_base_.model}},
    teacher=dict(
        config='mmdet::cascade_rcnn/cascade-mask-rcnn_x101-64x4d_fpn_20e_coco.py',
        checkpoint='https://download.openmmlab.com/mmdetection/v2.0/'
        'cascade_rcnn/cascade_mask_rcnn_x101_64x4d_fpn_20e_coco/'
        'cascade_mask_rcnn_x101_64x4d_fpn_20e_coco_20200512_161033-bdb5126a.pth'),
    distill=dict(
        fpn=dict(
            student='neck.fpn_convs.{0-3}.conv',
            teacher='neck.fpn_convs.{0-3}.conv',
            connector=dict(
                type='MLPConnector', in_channels=256, out_channels=256),
            loss=dict(type='L2Loss', loss_weight=5e-7))))

custom_hooks = [
    dict(type='mmdistill.StudentCheckpointHook'),
    # random generator states in the checkpoints: --resume continues exactly
    dict(type='mmdistill.RNGStateHook'),
]
