# FGD, focal and global distillation (Yang et al., CVPR 2022): Faster R-CNN R50
# learns from Cascade Mask R-CNN X101-32x4d with deformable convs (c3-c5) on
# the 4 FPN levels, one FGD loss per level; no inheriting (the heads differ).
# Settings of yzd-v/FGD configs/distillers/fgd/
# fgd_cascade_mask_rcnn_rx101_32x4d_distill_faster_rcnn_r50_fpn_2x_coco.py
_base_ = [
    '../_base_/distillers/'
    'cascade-mask-rcnn-x101-dconv_faster-rcnn-r50_2x_coco.py',
]

model = dict(
    distill=dict(
        fpn=dict(
            student='neck.fpn_convs.{0-3}.conv',
            teacher='neck.fpn_convs.{0-3}.conv',
            loss=dict(
                type='FGDLoss',
                in_channels=256,
                tau=0.5,
                alpha=5e-5,
                beta=2.5e-5,
                gamma=5e-5,
                lambda_=5e-7))))

optim_wrapper = dict(clip_grad=dict(max_norm=35, norm_type=2))
