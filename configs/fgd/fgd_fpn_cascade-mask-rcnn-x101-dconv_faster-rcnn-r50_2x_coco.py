# FGD (focal and global distillation): Faster R-CNN R50 learns from Cascade
# Mask R-CNN X101-32x4d with deformable convs (c3-c5) on the 4 FPN levels, one
# FGD loss per level; no inheriting (the heads differ). Settings of yzd-v/FGD
# configs/distillers/fgd/
# fgd_cascade_mask_rcnn_rx101_32x4d_distill_faster_rcnn_r50_fpn_2x_coco.py
_base_ = ['mmdet::faster_rcnn/faster-rcnn_r50_fpn_2x_coco.py']

model = dict(
    _delete_=True,
    type='mmdistill.SingleTeacherDistiller',
    student={{_base_.model}},
    teacher=dict(
        config='mmdet::dcn/'
        'cascade-mask-rcnn_x101-32x4d-dconv-c3-c5_fpn_1x_coco.py',
        checkpoint='https://download.openmmlab.com/mmdetection/v2.0/dcn/'
        'cascade_mask_rcnn_x101_32x4d_fpn_dconv_c3-c5_1x_coco/'
        'cascade_mask_rcnn_x101_32x4d_fpn_dconv_c3-c5_1x_coco-e75f90c8.pth'),
    distill=dict(
        fpn=dict(
            student='neck.fpn_convs.{0-3}.conv',
            teacher='neck.fpn_convs.{0-3}.conv',
            loss=dict(
                type='FGDLoss',
                in_channels=256,
                temperature=0.5,
                alpha=5e-5,
                beta=2.5e-5,
                gamma=5e-5,
                lambda_=5e-7))))

optim_wrapper = dict(clip_grad=dict(max_norm=35, norm_type=2))

custom_hooks = [
    dict(type='mmdistill.StudentCheckpointHook'),
    # random generator states in the checkpoints: --resume continues exactly
    dict(type='mmdistill.RNGStateHook'),
]
custom_imports = dict(imports=['mmdistill'], allow_failed_imports=False)
