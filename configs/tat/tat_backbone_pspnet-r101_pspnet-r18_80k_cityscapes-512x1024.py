# TaT, target-aware transformer (Lin et al., "Knowledge Distillation via the
# Target-aware Transformer", CVPR 2022, arXiv:2205.10793): PSPNet R18-d8 is
# reconfigured by attention keyed on PSPNet R101-d8's last backbone stage and
# matches it with the mean squared error, twice: on a 32 x 32 anchor grid
# (anchor-point, weight 0.04) and inside 64 groups of a 16 x 16 patch grid
# (patch-group, weight 0.1), both from one set of embeddings (theta, phi,
# gamma) computed once per step, as in the reference code. Weights
# alpha*gamma and alpha*beta of sihaoevery/TaT-seg train_voc_resnet18.sh
# (alpha 0.1, beta 1.0, gamma 0.4, n = m = 16, 64 heads).
# Memory: the anchor pair comes first, so the backward of the (larger)
# patch-group attention runs before the anchor gradients exist, and with_cp
# recomputes the embedding convs' outputs in the backward instead of keeping
# them (same values; README "Cost per method").
_base_ = [
    '../_base_/distillers/pspnet-r101_pspnet-r18_80k_cityscapes-512x1024.py',
]

model = dict(
    distill=dict(
        anchor=dict(
            student='backbone.layer4',
            teacher='backbone.layer4',
            connector=dict(
                type='TaTConnector',
                in_channels=512,
                out_channels=2048,
                mode='anchor',
                anchor_size=(32, 32),
                anchor_output='anchor',
                with_cp=True,
                norm_cfg=dict(type='SyncBN')),
            loss=dict(type='MSELoss', loss_weight=0.04)),
        patch_group=dict(
            student='backbone.layer4',
            teacher='backbone.layer4',
            connector=dict(
                type='TaTConnector',
                in_channels=512,
                out_channels=2048,
                mode='patch_group',
                patch_grid=(16, 16),
                num_groups=64,
                embeddings_from='anchor',
                norm_cfg=dict(type='SyncBN')),
            loss=dict(type='MSELoss', loss_weight=0.1))))
