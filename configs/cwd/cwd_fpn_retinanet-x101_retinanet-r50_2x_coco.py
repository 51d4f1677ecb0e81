# CWD, channel-wise distillation (Shu et al., ICCV 2021): RetinaNet R50 matches
# the per-channel spatial distributions of RetinaNet X101-64x4d on the 5 FPN
# outputs, tau = 1, weight 10 per level. Settings of open-mmlab/mmrazor
# configs/distill/mmdet/cwd/cwd_fpn_retina_r101_retina_r50_1x_coco.py, with
# the X101 teacher.
_base_ = ['../_base_/distillers/retinanet-x101_retinanet-r50_2x_coco.py']

model = dict(
    distill=dict(
        fpn=dict(
            student='neck[{0-4}]',
            teacher='neck[{0-4}]',
            loss=dict(type='ChannelWiseDivergence', tau=1.0,
                      loss_weight=10))))
