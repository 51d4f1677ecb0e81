"""ComposableLoss (KD-Zero): transforms -> distance -> weighting, one module
per kind of piece."""
from .distances import DISTANCES
from .loss import REDUCTIONS, ComposableLoss
from .transforms import TRANSFORMS
from .weightings import WEIGHTINGS

__all__ = ['ComposableLoss', 'TRANSFORMS', 'DISTANCES', 'WEIGHTINGS',
           'REDUCTIONS']
