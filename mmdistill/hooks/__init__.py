"""Runner hooks of mmdistill."""
from .distill_loss_schedule import DistillLossScheduleHook
from .feature_stats import FeatureStatsHook
from .student_checkpoint import StudentCheckpointHook, student_config

__all__ = [
    'StudentCheckpointHook', 'student_config', 'DistillLossScheduleHook',
    'FeatureStatsHook'
]
