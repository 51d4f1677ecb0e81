# FGD (focal and global distillation) on the demo: the RetinaNet R18 student
# learns the teacher's five FPN levels with the RetinaNet weights (alpha 1e-3,
# beta 5e-4, gamma 5e-4, lambda 5e-6, temperature 0.5), and starts from the
# teacher's FPN and head where shapes fit (FGD's inheriting strategy: the
# lateral 1x1 convs differ in input channels and stay random).
_base_ = ['./retinanet_r18-w8_student_synth.py']

model = dict(
    _delete_=True,
    type='mmdistill.SingleTeacherDistiller',
    student={{_base_.model}},
    teacher=dict(
        config='{{fileDirname}}/retinanet_r50-w16_teacher_synth.py',
        checkpoint='work_dirs/demo/det/teacher/iter_1500.pth'),
    init_student_from_teacher=['neck', 'bbox_head'],
    distill=dict(
        fpn=dict(
            student='neck.fpn_convs.{0-4}.conv',
            teacher='neck.fpn_convs.{0-4}.conv',
            loss=dict(
                type='FGDLoss', in_channels=32, tau=0.5,
                alpha=1e-3, beta=5e-4, gamma=5e-4, lambda_=5e-6))))
# merged into the student's default_hooks; RNGStateHook: random generator
# states in the checkpoints, so --resume continues exactly
default_hooks = dict(
    student_checkpoint=dict(type='mmdistill.StudentCheckpointHook'),
    rng_state=dict(type='mmdistill.RNGStateHook'))
