# RetinaNet X101-64x4d-FPN of the mmdet model zoo (COCO, 2x schedule, 40.8
# box AP), built from the config its checkpoint was released with.
teacher = dict(
    config='mmdet::retinanet/retinanet_x101-64x4d_fpn_2x_coco.py',
    checkpoint='https://download.openmmlab.com/mmdetection/v2.0/'
    'retinanet/retinanet_x101_64x4d_fpn_2x_coco/'
    'retinanet_x101_64x4d_fpn_2x_coco_20200131-bca068ab.pth')
