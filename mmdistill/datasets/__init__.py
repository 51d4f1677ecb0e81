"""Registered datasets of the demo's generated scenes (no download needed).

The scene writer itself (``write_synth_dataset``, ``generate``,
``write_coco_layout``, ``write_cityscapes_layout``, ``photo_bank``) is demo
material and lives in ``demo/synthetic.py``; it needs the ``[demo]`` extra
(scikit-image) for photo content.
"""
from .synth_datasets import (SYNTH_CLASSES, SYNTH_PALETTE, SynthDetDataset,
                             SynthSegDataset)

__all__ = [
    'SYNTH_CLASSES', 'SYNTH_PALETTE', 'SynthDetDataset', 'SynthSegDataset'
]

# Transitional: the names the scene writer had here before it moved to
# demo/synthetic.py, forwarded to it in a source checkout (where demo/ sits
# next to the package). Remove once nothing imports them from here.
_MOVED = ('generate', 'write_cityscapes_layout', 'write_coco_layout',
          'PhotoBank', 'photo_bank', 'write_synth_dataset')


def __getattr__(name: str):
    if name not in _MOVED:
        raise AttributeError(
            f'module {__name__!r} has no attribute {name!r}')
    import importlib
    import os.path as osp
    import sys
    repo = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
    if not osp.isfile(osp.join(repo, 'demo', 'synthetic.py')):
        raise ImportError(
            f'mmdistill.datasets.{name} moved to the demo: import it from '
            'demo/synthetic.py of an mmdistill source checkout ('
            f'`from demo.synthetic import {name}` with the repository root '
            'on sys.path).')
    if repo not in sys.path:
        sys.path.insert(0, repo)
    return getattr(importlib.import_module('demo.synthetic'), name)
