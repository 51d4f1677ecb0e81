# TaT, target-aware transformer (Lin et al., "Knowledge Distillation via the
# Target-aware Transformer", CVPR 2022, arXiv:2205.10793): PSPNet R18-d8 is
# reconfigured by attention keyed on PSPNet R101-d8's last backbone stage and
# matches it with the mean squared error, twice: on a 32 x 32 anchor grid
# (anchor-point, weight 0.04) and inside 64 groups of a 16 x 16 patch grid
# (patch-group, weight 0.1), both from one set of embeddings (theta, phi,
# gamma) computed once per step, as in the reference code. Weights
# alpha*gamma and alpha*beta of sihaoevery/TaT-seg train_voc_resnet18.sh
# (alpha 0.1, beta 1.0, gamma 0.4, n = m = 16, 64 heads).
# Memory (same values; README "Cost per method"): the pairs' with_cp keeps
# nothing of both TaT pairs for the backward but the two tapped maps and
# runs them again there, after the student's head has freed its
# activations; the connector's with_cp then recomputes the embedding convs'
# outputs for their norms instead of keeping them; the anchor pair comes
# first, so the backward of the (larger) patch-group attention runs before
# the anchor gradients exist.
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
            loss=dict(type='MSELoss', loss_weight=0.04),
            with_cp=True),
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
