"""mmdistill: knowledge distillation for mmdet, mmseg and mmpretrain models."""
from .version import __version__
from .utils.version_guard import check_versions

# Stop early, naming the package, when the installed OpenMMLab stack is
# outside the supported ranges (reads package metadata only).
check_versions()

from .utils.checkpoint import install_safe_loading  # noqa: E402

# Every mmengine checkpoint scheme reads weights-only, on every torch; the
# objects of mmengine's runner checkpoints are allowed (utils/checkpoint.py).
install_safe_loading()

from . import registry  # noqa: E402,F401

__all__ = ['__version__', 'registry']
