# ViT attention distillation (AttnDistill: Wang et al., "Attention
# Distillation: self-supervised vision transformer students need more
# guidance", BMVC 2022, arXiv:2210.00944) on ImageNet-1k: DeiT-tiny (3 heads)
# learns the class-token attention of DeiT-small (6 heads) in the last block,
# both heads merged by a tempered softmax of summed log-attention (tau 10,
# weight 0.1), and its last-layer class token, projected to 384 channels by
# the 4-layer projector, matches the teacher's class token with the mean
# squared error (weight 1). Weights, tau and projector of
# wangkai930418/attndistill mugs_teacher.sh; the student keeps its own DeiT
# recipe (300 epochs, 4 GPUs x 256 images, label smoothing, Mixup/CutMix) and
# classification loss.
_base_ = ['../_base_/distillers/deit-small_deit-tiny_300e_in1k.py']

model = dict(
    distill=dict(
        class_attention=dict(
            student='backbone.layers.11.attn.qkv',
            teacher='backbone.layers.11.attn.qkv',
            loss=dict(
                type='ViTAttentionLoss',
                student_heads=3,
                teacher_heads=6,
                tau=10.0,
                loss_weight=0.1)),
        class_token=dict(
            student='backbone.layers.11',
            teacher='backbone[0]',
            connector=dict(
                type='TokenProjector',
                in_channels=192,
                out_channels=384,
                token_index=0),
            loss=dict(type='MSELoss', loss_weight=1.0))))
