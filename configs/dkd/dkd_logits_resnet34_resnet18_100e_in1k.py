# DKD (Zhao et al., CVPR 2022) on the logits, ResNet-34 -> ResNet-18 on
# ImageNet-1k, settings of the paper's ImageNet table (megvii-research/
# mdistiller configs/imagenet/r34_r18/dkd.yaml): alpha (TCKD) 1, beta
# (NCKD) 0.5, temperature 1, the student's cross-entropy weight 1. The
# official warm-up there is 1 epoch of min(epoch / 1, 1) with epochs from 1,
# a factor of 1 from the start: no warm-up (warmup_iters=0).
_base_ = ['../_base_/distillers/resnet34_resnet18_100e_in1k.py']

model = dict(
    distill=dict(
        logits=dict(
            student='head.fc',
            teacher='head.fc',
            loss=dict(
                type='DKDLoss',
                tau=1.0,
                alpha=1.0,
                beta=0.5,
                warmup_iters=0))))
