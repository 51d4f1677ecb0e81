"""Runner hooks of mmdistill."""
from .student_checkpoint import StudentCheckpointHook, student_config

__all__ = ['StudentCheckpointHook', 'student_config']
