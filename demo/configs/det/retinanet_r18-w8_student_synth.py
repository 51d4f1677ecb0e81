# Student: RetinaNet with a ResNet-18 backbone (basic blocks) at an eighth of
# the width (base 8: stages 8-64 channels); same FPN (32 channels) and head
# as the teacher, as in the papers' R101 -> R50 settings. Trained alone.
_base_ = [
    'mmdet::_base_/models/retinanet_r50_fpn.py', '../_base_/synth_det.py'
]
model = dict(
    backbone=dict(
        depth=18, base_channels=8, frozen_stages=-1, norm_eval=False,
        init_cfg=None),
    neck=dict(in_channels=[8, 16, 32, 64], out_channels=32),
    bbox_head=dict(
        num_classes=6, in_channels=32, feat_channels=32, stacked_convs=2,
        anchor_generator=dict(octave_base_scale=3)))
