"""Distillation losses: ``forward(student, teacher, data_samples=None)``
returning a scalar already multiplied by its weight."""
from .angular import AngularLoss
from .at import ATLoss
from .composable import ComposableLoss
from .cwd import ChannelWiseDivergence
from .dist import DISTLoss
from .dkd import DKDLoss
from .fgd import FGDLoss
from .kd import KDLoss
from .l2 import L2Loss
from .magnitude import MagnitudeLoss
from .mgd import MGDLoss
from .mse import MSELoss
from .pixel_kl import PixelKLDivergence
from .vit_attention import ViTAttentionLoss

__all__ = [
    'FGDLoss', 'L2Loss', 'MSELoss', 'AngularLoss', 'MagnitudeLoss',
    'ChannelWiseDivergence', 'PixelKLDivergence', 'ATLoss', 'MGDLoss',
    'ComposableLoss', 'ViTAttentionLoss', 'KDLoss', 'DKDLoss', 'DISTLoss'
]
