"""Student-side connectors: ``forward(student, teacher=None) -> student'``.

Every connector maps the student feature ``(N, C_s, H, W)`` to the shape the
loss compares with the (detached) teacher feature; only ``TaTConnector``
reads the teacher (its keys), and never passes gradients to it.
"""
from .conv import ConvConnector
from .deform_conv import DeformConvConnector
from .identity import IdentityConnector
from .linear import LinearConnector
from .mgd import MGDConnector
from .mlp import MLPConnector
from .non_local import NonLocalConnector
from .tat import TaTConnector
from .token_projector import TokenProjector

__all__ = [
    'ConvConnector', 'DeformConvConnector', 'IdentityConnector',
    'LinearConnector', 'MGDConnector', 'MLPConnector', 'NonLocalConnector',
    'TaTConnector', 'TokenProjector'
]
