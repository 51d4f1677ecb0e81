# What every distillation config adds to its student's runtime, in one place:
# the student-only checkpoints and the random generator states in the runner
# checkpoints (--resume continues exactly). A distiller base merges them into
# the student's default_hooks with `default_hooks = {{_base_.distill_hooks}}`,
# so the student's own custom_hooks (EMAHook, PipelineSwitchHook, ...) and
# custom_imports stay as they are. mmengine imports mmdistill when it meets
# a 'mmdistill.' type, so mmdet's, mmseg's and mmpretrain's own
# tools/train.py run these configs too.
distill_hooks = dict(
    student_checkpoint=dict(type='mmdistill.StudentCheckpointHook'),
    rng_state=dict(type='mmdistill.RNGStateHook'))
