# ResNet-50 teaches MobileNet-V2 on ImageNet-1k; the student keeps
# mmpretrain's MobileNet-V2 recipe (8 GPUs x 32 images, SGD lr 0.045, 300
# epochs) and its cross-entropy loss.
# The student is its own config's model, the teacher comes from
# _base_/teachers/; a config that inherits this file adds model.distill.
_base_ = [
    'mmpretrain::mobilenet_v2/mobilenet-v2_8xb32_in1k.py',
    '../teachers/resnet50_100e_in1k.py',
    '../distill_runtime.py',
]

model = dict(
    _delete_=True,
    type='mmdistill.SingleTeacherDistiller',
    student={{_base_.model}},
    teacher={{_base_.teacher}})
default_hooks = {{_base_.distill_hooks}}
