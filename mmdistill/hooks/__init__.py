"""Runner hooks of mmdistill."""
from .auto_loss_weight import AutoLossWeightHook
from .distill_loss_schedule import DistillLossScheduleHook
from .feature_stats import FeatureStatsHook
from .rng_state import RNGStateHook, get_rng_state, set_rng_state
from .student_checkpoint import StudentCheckpointHook, student_config
from .teacher_check import TeacherCheckError, TeacherCheckHook

__all__ = [
    'StudentCheckpointHook', 'student_config', 'DistillLossScheduleHook',
    'FeatureStatsHook', 'RNGStateHook', 'get_rng_state', 'set_rng_state',
    'TeacherCheckHook', 'TeacherCheckError', 'AutoLossWeightHook'
]
