# What every distillation config adds to its student's runtime, in one place:
# mmdistill registered through custom_imports (so mmdet's, mmseg's and
# mmpretrain's own tools/train.py run the config too), the student-only
# checkpoints and the random generator states in the runner checkpoints
# (--resume continues exactly). Inherited through _base_/distillers/.
custom_imports = dict(imports=['mmdistill'], allow_failed_imports=False)
custom_hooks = [
    dict(type='mmdistill.StudentCheckpointHook'),
    dict(type='mmdistill.RNGStateHook'),
]
