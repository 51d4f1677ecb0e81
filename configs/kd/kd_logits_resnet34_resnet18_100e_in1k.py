# KD (Hinton et al. 2015) on the logits, ResNet-34 -> ResNet-18 on
# ImageNet-1k, with the ImageNet recipe of megvii-research/mdistiller
# (configs/imagenet/r34_r18/kd.yaml, 71.03 top-1 in its README's ImageNet
# results): temperature 1, KD weight 0.5 and the student's cross-entropy
# weight 0.5.
_base_ = ['../_base_/distillers/resnet34_resnet18_100e_in1k.py']

model = dict(
    student=dict(head=dict(loss=dict(loss_weight=0.5))),
    distill=dict(
        logits=dict(
            student='head.fc',
            teacher='head.fc',
            loss=dict(type='KDLoss', tau=1.0, loss_weight=0.5))))
