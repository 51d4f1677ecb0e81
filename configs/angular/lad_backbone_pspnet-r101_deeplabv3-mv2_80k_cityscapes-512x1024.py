# LAD, layer-wise angular distillation (Liu et al., "Rethinking Knowledge
# Distillation with Raw Features for Semantic Segmentation", WACV 2024,
# Sec. 4.2), heterogeneous: DeepLabV3 MobileNetV2-d8 learns the direction of
# PSPNet R101-d8's last backbone stage as one C*H*W vector, lambda_ad = 10,
# after a 1x1 conv + BN + ReLU aligns 320 -> 2048 channels, plus pixel-wise KD
# on the logits, lambda_kd = 10.
_base_ = [
    '../_base_/distillers/'
    'pspnet-r101_deeplabv3-mv2_80k_cityscapes-512x1024.py',
    '../_base_/distill/lad_backbone_pspnet-r101_mv2.py',
]

model = dict(distill={{_base_.distill}})
