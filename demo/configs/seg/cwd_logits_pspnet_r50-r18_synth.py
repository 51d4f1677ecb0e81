# Channel-wise distillation (CWD) on the demo: the PSPNet R18 student's
# logits learn the teacher's per-class spatial distributions, tau = 1,
# weight 5 (the setting in use on PSPNet logits).
_base_ = ['./pspnet_r18-w8_student_synth.py']

model = dict(
    _delete_=True,
    type='mmdistill.SingleTeacherDistiller',
    student={{_base_.model}},
    teacher=dict(
        config='{{fileDirname}}/pspnet_r50-w16_teacher_synth.py',
        checkpoint='work_dirs/demo/seg/teacher/iter_800.pth'),
    distill=dict(
        logits=dict(
            student='decode_head.conv_seg',
            teacher='decode_head.conv_seg',
            loss=dict(type='ChannelWiseDivergence', tau=1.0,
                      loss_weight=5.0))))
# merged into the student's default_hooks; RNGStateHook: random generator
# states in the checkpoints, so --resume continues exactly
default_hooks = dict(
    student_checkpoint=dict(type='mmdistill.StudentCheckpointHook'),
    rng_state=dict(type='mmdistill.RNGStateHook'))
