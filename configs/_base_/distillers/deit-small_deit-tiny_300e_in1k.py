# DeiT-small teaches DeiT-tiny on ImageNet-1k; the student keeps mmpretrain's
# DeiT-tiny recipe (300 epochs, 4 GPUs x 256 images, label smoothing,
# Mixup/CutMix) and its classification loss.
# The student is its own config's model, the teacher comes from
# _base_/teachers/; a config that inherits this file adds model.distill.
_base_ = [
    'mmpretrain::deit/deit-tiny_4xb256_in1k.py',
    '../teachers/deit-small_300e_in1k.py',
    '../distill_runtime.py',
]

model = dict(
    _delete_=True,
    type='mmdistill.SingleTeacherDistiller',
    student={{_base_.model}},
    teacher={{_base_.teacher}})
default_hooks = {{_base_.distill_hooks}}
