# The MLP connector (Liu et al., ICCV-W 2023) on the demo: the PSPNet R18
# student learns the teacher's last backbone stage through the channel-wise
# MLP (64 -> 512 channels), L2 loss, alpha = 2e-5 (homogeneous
# segmentation).
_base_ = ['./pspnet_r18-w8_student_synth.py']

model = dict(
    _delete_=True,
    type='mmdistill.SingleTeacherDistiller',
    student={{_base_.model}},
    teacher=dict(
        config='{{fileDirname}}/pspnet_r50-w16_teacher_synth.py',
        checkpoint='work_dirs/demo/seg/teacher/iter_800.pth'),
    distill=dict(
        stage4=dict(
            student='backbone.layer4',
            teacher='backbone.layer4',
            connector=dict(
                type='MLPConnector', in_channels=64, out_channels=512),
            loss=dict(type='L2Loss', loss_weight=2e-5))))
# merged into the student's default_hooks; RNGStateHook: random generator
# states in the checkpoints, so --resume continues exactly
default_hooks = dict(
    student_checkpoint=dict(type='mmdistill.StudentCheckpointHook'),
    rng_state=dict(type='mmdistill.RNGStateHook'))
