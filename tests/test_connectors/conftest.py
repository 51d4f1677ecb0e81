"""Build registered components in the mmdistill scope, as the distiller does
(an earlier Runner test may leave mmengine's default scope at mmdet/mmseg)."""
import pytest
from mmengine.registry import DefaultScope


@pytest.fixture(autouse=True)
def mmdistill_scope():
    with DefaultScope.overwrite_default_scope('mmdistill'):
        yield
