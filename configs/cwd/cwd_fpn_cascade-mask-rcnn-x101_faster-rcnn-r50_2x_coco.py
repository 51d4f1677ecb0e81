# CWD (channel-wise distillation): Faster R-CNN R50 matches the per-channel
# spatial distributions of Cascade Mask R-CNN X101-64x4d on the 5 FPN outputs
# (4 convolved levels + the max-pooled 5th), tau = 1, weight 10 per level.
# Settings of open-mmlab/mmrazor configs/distill/mmdet/cwd/
# cwd_fpn_frcnn_r101_frcnn_r50_1x_coco.py, with the X101 teacher.
_base_ = ['mmdet::faster_rcnn/faster-rcnn_r50_fpn_2x_coco.py']

model = dict(
    _delete_=True,
    type='mmdistill.SingleTeacherDistiller',
    student={{_base_.model}},
    teacher=dict(
        config='mmdet::cascade_rcnn/'
        'cascade-mask-rcnn_x101-64x4d_fpn_20e_coco.py',
        checkpoint='https://download.openmmlab.com/mmdetection/v2.0/'
        'cascade_rcnn/cascade_mask_rcnn_x101_64x4d_fpn_20e_coco/'
        'cascade_mask_rcnn_x101_64x4d_fpn_20e_coco_20200512_161033-bdb5126a'
        '.pth'),
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
