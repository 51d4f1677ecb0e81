# Cascade Mask R-CNN X101-32x4d with deformable convs teaches Faster R-CNN R50
# on COCO; the student keeps its own mmdet recipe (2x schedule, 8 GPUs x 2
# images).
# The student is its own config's model, the teacher comes from
# _base_/teachers/; a config that inherits this file adds model.distill.
_base_ = [
    'mmdet::faster_rcnn/faster-rcnn_r50_fpn_2x_coco.py',
    '../teachers/cascade-mask-rcnn-x101-dconv_1x_coco.py',
    '../distill_runtime.py',
]

model = dict(
    _delete_=True,
    type='mmdistill.SingleTeacherDistiller',
    student={{_base_.model}},
    teacher={{_base_.teacher}})
default_hooks = {{_base_.distill_hooks}}
