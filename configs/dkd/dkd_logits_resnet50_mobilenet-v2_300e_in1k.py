# DKD (Zhao et al., CVPR 2022) on the logits, ResNet-50 -> MobileNet-V2 on
# ImageNet-1k. The paper's heterogeneous ImageNet pair is ResNet-50 ->
# MobileNet-V1 (not in mmpretrain); its settings are used here, which the
# authors' code also gives this very pair (megvii-research/mdistiller
# configs/imagenet/r50_mv2/dkd.yaml, as r50_mv1/dkd.yaml): alpha 1, beta 2,
# temperature 1, no warm-up (1 epoch of min(epoch / 1, 1)), the student's
# cross-entropy weight 1. The student keeps mmpretrain's MobileNet-V2 recipe
# (8 GPUs x 32 images, SGD lr 0.045, 300 epochs); the teacher is
# mmpretrain's ResNet-50 (76.55 top-1).
_base_ = ['../_base_/distillers/resnet50_mobilenet-v2_300e_in1k.py']

model = dict(
    distill=dict(
        logits=dict(
            student='head.fc',
            teacher='head.fc',
            loss=dict(
                type='DKDLoss',
                tau=1.0,
                alpha=1.0,
                beta=2.0,
                warmup_iters=0))))
