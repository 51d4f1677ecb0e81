# CAD, channel-wise angular distillation (Liu et al., WACV 2024, Eq. 7): the
# LAD config with each channel's H*W map compared as a unit vector, PSPNet
# R18-d8 student, PSPNet R101-d8 teacher, lambda_ad = 10 plus logits KD 10.
_base_ = ['./lad_backbone_pspnet-r101_pspnet-r18_80k_cityscapes-512x1024.py']

distill = dict(backbone=dict(loss=dict(mode='channel')))
model = dict(distill=distill)
