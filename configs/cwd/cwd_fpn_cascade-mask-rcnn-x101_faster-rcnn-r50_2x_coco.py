# CWD, channel-wise distillation (Shu et al., ICCV 2021): Faster R-CNN R50
# matches the per-channel spatial distributions of Cascade Mask R-CNN
# X101-64x4d on the 5 FPN outputs (4 convolved levels + the max-pooled 5th),
# tau = 1, weight 10 per level. Settings of open-mmlab/mmrazor
# configs/distill/mmdet/cwd/cwd_fpn_frcnn_r101_frcnn_r50_1x_coco.py, with the
# X101 teacher.
_base_ = [
    '../_base_/distillers/cascade-mask-rcnn-x101_faster-rcnn-r50_2x_coco.py',
]

model = dict(
    distill=dict(
        fpn=dict(
            student='neck[{0-4}]',
            teacher='neck[{0-4}]',
            loss=dict(type='ChannelWiseDivergence', tau=1.0,
                      loss_weight=10))))
