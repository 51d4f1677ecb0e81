# CWD, channel-wise distillation (Shu et al., ICCV 2021) on the logits,
# heterogeneous: DeepLabV3 R18-d8 matches the per-class spatial distributions
# of PSPNet R101-d8 (decode_head.conv_seg of both), tau = 1, weight 5: the
# PSPNet setting of open-mmlab/mmrazor configs/distill/mmseg/cwd/ applied to
# DeepLabV3.
_base_ = [
    '../_base_/distillers/'
    'pspnet-r101_deeplabv3-r18_80k_cityscapes-512x1024.py',
]

model = dict(
    distill=dict(
        logits=dict(
            student='decode_head.conv_seg',
            teacher='decode_head.conv_seg',
            loss=dict(type='ChannelWiseDivergence', tau=1.0,
                      loss_weight=5))))
