"""mmdistill: knowledge distillation for mmdet, mmseg and mmpretrain models."""
from .version import __version__
from .utils.checkpoint import allow_mmengine_checkpoints

# torch >= 2.6 loads checkpoints weights-only; allow exactly the types that
# mmengine's own runner checkpoints hold (see utils/checkpoint.py).
allow_mmengine_checkpoints()

from . import registry  # noqa: E402,F401

__all__ = ['__version__', 'registry']
