# Cascade Mask R-CNN X101-64x4d-FPN of the mmdet model zoo (COCO, 20 epochs,
# 45.6 box AP), built from the config its checkpoint was released with.
teacher = dict(
    config='mmdet::cascade_rcnn/'
    'cascade-mask-rcnn_x101-64x4d_fpn_20e_coco.py',
    checkpoint='https://download.openmmlab.com/mmdetection/v2.0/'
    'cascade_rcnn/cascade_mask_rcnn_x101_64x4d_fpn_20e_coco/'
    'cascade_mask_rcnn_x101_64x4d_fpn_20e_coco_20200512_161033-bdb5126a'
    '.pth')
