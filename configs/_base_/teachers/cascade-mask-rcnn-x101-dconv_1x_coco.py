# Cascade Mask R-CNN X101-32x4d-FPN with deformable convs in c3-c5, of the
# mmdet model zoo (COCO, 1x schedule, 47.3 box AP), built from the config its
# checkpoint was released with.
teacher = dict(
    config='mmdet::dcn/'
    'cascade-mask-rcnn_x101-32x4d-dconv-c3-c5_fpn_1x_coco.py',
    checkpoint='https://download.openmmlab.com/mmdetection/v2.0/dcn/'
    'cascade_mask_rcnn_x101_32x4d_fpn_dconv_c3-c5_1x_coco/'
    'cascade_mask_rcnn_x101_32x4d_fpn_dconv_c3-c5_1x_coco-e75f90c8.pth')
