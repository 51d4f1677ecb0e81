"""Distillers: the models the runner trains."""
from .guard import DistillGuard, DistillGuardError
from .single_teacher import SingleTeacherDistiller
from .taps import Tap, expand_braces, parse_tap
from .teacher import TeacherRunner

__all__ = [
    'SingleTeacherDistiller', 'DistillGuard', 'DistillGuardError',
    'TeacherRunner', 'Tap', 'expand_braces', 'parse_tap'
]
