"""Analysis helpers behind ``tools/analysis``: candidate taps of a model
from one dummy forward, and distillation pairs proposed from them."""
from .probe import Candidate, Probe, build_random, probe_model
from .suggest import (METHODS, SuggestError, Suggestion, format_candidates,
                      format_suggestion, load_settings, render_config,
                      suggest)

__all__ = [
    'Candidate', 'Probe', 'build_random', 'probe_model', 'METHODS',
    'SuggestError', 'Suggestion', 'format_candidates', 'format_suggestion',
    'load_settings', 'render_config', 'suggest'
]
