# The demo's classification distiller: the ResNet-18 (w32) teacher, trained
# by demo/run_demo.py, teaches the ResNet-18 (w8) student, which keeps its
# own cross-entropy; a method's config adds model.distill.
_base_ = ['../cls/resnet18-w8_student_synth.py']

model = dict(
    _delete_=True,
    type='mmdistill.SingleTeacherDistiller',
    student={{_base_.model}},
    teacher=dict(
        config='{{fileDirname}}/../cls/resnet18-w32_teacher_synth.py',
        checkpoint='work_dirs/demo/cls/teacher/iter_1500.pth'))
# merged into the student's default_hooks; RNGStateHook: random generator
# states in the checkpoints, so --resume continues exactly
default_hooks = dict(
    student_checkpoint=dict(type='mmdistill.StudentCheckpointHook'),
    rng_state=dict(type='mmdistill.RNGStateHook'))
