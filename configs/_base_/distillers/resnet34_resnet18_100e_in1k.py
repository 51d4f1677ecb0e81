# ResNet-34 teaches ResNet-18 on ImageNet-1k; the student keeps mmpretrain's
# ResNet-18 recipe (8 GPUs x 32 images, SGD lr 0.1, 100 epochs, steps at
# 30/60/90: the DKD and DIST ImageNet recipes with their linear lr scaling)
# and its cross-entropy loss.
# The student is its own config's model, the teacher comes from
# _base_/teachers/; a config that inherits this file adds model.distill.
_base_ = [
    'mmpretrain::resnet/resnet18_8xb32_in1k.py',
    '../teachers/resnet34_100e_in1k.py',
    '../distill_runtime.py',
]

model = dict(
    _delete_=True,
    type='mmdistill.SingleTeacherDistiller',
    student={{_base_.model}},
    teacher={{_base_.teacher}})
default_hooks = {{_base_.distill_hooks}}
