# CWD, channel-wise distillation (Shu et al., ICCV 2021) on the logits: PSPNet
# R18-d8 matches the per-class spatial distributions of PSPNet R101-d8
# (decode_head.conv_seg), tau = 1, weight 5. Settings of open-mmlab/mmrazor
# configs/distill/mmseg/cwd/
# cwd_logits_pspnet_r101_d8_pspnet_r18_d8_512x1024_cityscapes_80k.py
_base_ = [
    '../_base_/distillers/pspnet-r101_pspnet-r18_80k_cityscapes-512x1024.py',
]

model = dict(
    distill=dict(
        logits=dict(
            student='decode_head.conv_seg',
            teacher='decode_head.conv_seg',
            loss=dict(type='ChannelWiseDivergence', tau=1.0,
                      loss_weight=5))))
