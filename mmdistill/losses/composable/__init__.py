"""ComposableLoss (KD-Zero): transforms -> distance -> weighting, one module
per kind of piece.

Paper: "KD-Zero: Evolving Knowledge Distiller for Any Teacher-Student Pairs",
Lujun Li et al., NeurIPS 2023 (https://openreview.net/forum?id=OlMKa5YZ8e),
supplementary material, appendix E.
"""
from .distances import DISTANCES
from .loss import REDUCTIONS, ComposableLoss
from .transforms import TRANSFORMS
from .weightings import WEIGHTINGS

__all__ = ['ComposableLoss', 'TRANSFORMS', 'DISTANCES', 'WEIGHTINGS',
           'REDUCTIONS']
