# DIST (Huang et al., NeurIPS 2022) on the logits, ResNet-34 -> ResNet-18 on
# ImageNet-1k, the paper's baseline setting (hunto/image_classification_sota
# configs/strategies/distill/resnet_dist.yaml): beta = gamma = 1,
# temperature 1, the DIST loss weighted 2 and the student's cross-entropy
# weight 1.
_base_ = ['../_base_/distillers/resnet34_resnet18_100e_in1k.py']

model = dict(
    distill=dict(
        logits=dict(
            student='head.fc',
            teacher='head.fc',
            loss=dict(
                type='DISTLoss', tau=1.0, beta=1.0, gamma=1.0,
                loss_weight=2.0))))
