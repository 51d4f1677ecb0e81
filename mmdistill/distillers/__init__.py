"""Distillers: the models the runner trains."""
from .single_teacher import SingleTeacherDistiller
from .taps import Tap, expand_braces, parse_tap

__all__ = ['SingleTeacherDistiller', 'Tap', 'expand_braces', 'parse_tap']
