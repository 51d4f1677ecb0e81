# FGD, focal and global distillation (Yang et al., CVPR 2022): RetinaNet R50
# learns from RetinaNet X101-64x4d on the 5 FPN levels, one FGD loss per level,
# and starts from the teacher's neck and head ("inheriting strategy").
# Settings of yzd-v/FGD configs/distillers/fgd/
# fgd_retina_rx101_64x4d_distill_retina_r50_fpn_2x_coco.py
_base_ = ['../_base_/distillers/retinanet-x101_retinanet-r50_2x_coco.py']

# FGD's teacher is the 1x checkpoint (41.0 box AP), with the config it was
# released with
teacher = dict(
    config='mmdet::retinanet/retinanet_x101-64x4d_fpn_1x_coco.py',
    checkpoint='https://download.openmmlab.com/mmdetection/v2.0/'
    'retinanet/retinanet_x101_64x4d_fpn_1x_coco/'
    'retinanet_x101_64x4d_fpn_1x_coco_20200130-366f5af1.pth')
model = dict(
    teacher=teacher,
    init_student_from_teacher=['neck', 'bbox_head'],
    distill=dict(
        fpn=dict(
            student='neck.fpn_convs.{0-4}.conv',
            teacher='neck.fpn_convs.{0-4}.conv',
            loss=dict(
                type='FGDLoss',
                in_channels=256,
                tau=0.5,
                alpha=1e-3,
                beta=5e-4,
                gamma=5e-4,
                lambda_=5e-6))))

optim_wrapper = dict(clip_grad=dict(max_norm=35, norm_type=2))
