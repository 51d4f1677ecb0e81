# KD (Hinton et al. 2015) on the demo's crops: the ResNet-18 student learns
# the teacher's logits (head.fc) with the CIFAR-100 setting of
# megvii-research/mdistiller (configs/cifar100/kd.yaml): temperature 4, KD
# weight 0.9, the student's own cross-entropy weight 0.1.
_base_ = ['../_base_/distill_cls.py']

model = dict(
    student=dict(head=dict(loss=dict(loss_weight=0.1))),
    distill=dict(
        logits=dict(
            student='head.fc',
            teacher='head.fc',
            loss=dict(type='KDLoss', tau=4.0, loss_weight=0.9))))
