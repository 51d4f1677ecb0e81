# MGD, masked generative distillation (Yang et al., ECCV 2022): RetinaNet R50
# masks 65 % of the positions of each FPN level (5 levels) and generates the
# RetinaNet X101-64x4d features from the rest, alpha = 2e-5; the student
# starts from the teacher's neck and head. Settings of yzd-v/MGD
# det/configs/distillers/mgd/
# retina_rx101_64x4d_distill_retina_r50_fpn_2x_coco.py
_base_ = ['../_base_/distillers/retinanet-x101_retinanet-r50_2x_coco.py']

# MGD's teacher is the multi-scale 3x checkpoint (41.6 box AP), with the
# config it was released with
teacher = dict(
    config='mmdet::retinanet/retinanet_x101-64x4d_fpn_ms-640-800-3x_coco.py',
    checkpoint='https://download.openmmlab.com/mmdetection/v2.0/'
    'retinanet/retinanet_x101_64x4d_fpn_mstrain_3x_coco/'
    'retinanet_x101_64x4d_fpn_mstrain_3x_coco_20210719_051838-022c2187'
    '.pth')
model = dict(
    teacher=teacher,
    init_student_from_teacher=['neck', 'bbox_head'],
    distill=dict(
        fpn=dict(
            student='neck.fpn_convs.{0-4}.conv',
            teacher='neck.fpn_convs.{0-4}.conv',
            connector=dict(
                type='MGDConnector',
                in_channels=256,
                out_channels=256,
                mask_ratio=0.65),
            loss=dict(type='MGDLoss', loss_weight=2e-5))))

optim_wrapper = dict(clip_grad=dict(max_norm=35, norm_type=2))
