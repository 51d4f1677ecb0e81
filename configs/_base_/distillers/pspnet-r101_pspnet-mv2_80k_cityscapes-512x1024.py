# PSPNet R101-d8 teaches PSPNet MobileNetV2-d8 on Cityscapes; the student
# keeps its own mmseg recipe (80k iterations, 512 x 1024 crops, 4 GPUs x 2
# images).
# The student is its own config's model, the teacher comes from
# _base_/teachers/; a config that inherits this file adds model.distill.
_base_ = [
    'mmseg::mobilenet_v2/'
    'mobilenet-v2-d8_pspnet_4xb2-80k_cityscapes-512x1024.py',
    '../teachers/pspnet-r101_80k_cityscapes-512x1024.py',
    '../distill_runtime.py',
]

model = dict(
    _delete_=True,
    type='mmdistill.SingleTeacherDistiller',
    student={{_base_.model}},
    teacher={{_base_.teacher}})
default_hooks = {{_base_.distill_hooks}}
