# Shared part of the logit distillation configs ResNet-34 -> ResNet-18 on
# ImageNet-1k (configs/kd, configs/dkd, configs/dist): the student keeps
# mmpretrain's ResNet-18 recipe (8 GPUs x 32 images, SGD lr 0.1, 100
# epochs, steps at 30/60/90, as the DKD and DIST ImageNet recipes with
# their linear lr scaling) and its cross-entropy loss; the teacher is
# mmpretrain's ResNet-34 (73.62 top-1) from the config its checkpoint was
# released with; the logits of both classifiers (the output of
# head.fc, 1000 classes) form the pair `logits`. A config that inherits
# this file adds the loss: model = dict(distill=dict(logits=dict(loss=...)))
_base_ = ['mmpretrain::resnet/resnet18_8xb32_in1k.py']

model = dict(
    _delete_=True,
    type='mmdistill.SingleTeacherDistiller',
    student={{_base_.model}},
    teacher=dict(
        config='mmpretrain::resnet/resnet34_8xb32_in1k.py',
        checkpoint='https://download.openmmlab.com/mmclassification/v0/'
        'resnet/resnet34_8xb32_in1k_20210831-f257d4e6.pth'),
    distill=dict(logits=dict(student='head.fc', teacher='head.fc')))

custom_hooks = [
    dict(type='mmdistill.StudentCheckpointHook'),
    # random generator states in the checkpoints: --resume continues exactly
    dict(type='mmdistill.RNGStateHook'),
]
custom_imports = dict(imports=['mmdistill'], allow_failed_imports=False)
