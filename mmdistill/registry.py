"""Registries of mmdistill.

Every registry is a child of mmengine's root registry with the scope
``mmdistill``, so a config run by mmdet's or mmseg's own ``tools/train.py``
finds ``type='mmdistill.SingleTeacherDistiller'`` (mmengine imports
``mmdistill.registry`` when it meets the ``mmdistill.`` prefix), and
``locations=`` makes the classes importable lazily.

Connectors and losses are ``nn.Module`` s and live in ``MODELS`` like every
OpenMMLab loss; distillers, connectors and losses are found through their
subpackages.
"""
from mmengine.registry import HOOKS as MMENGINE_HOOKS
from mmengine.registry import MODELS as MMENGINE_MODELS
from mmengine.registry import DATASETS as MMENGINE_DATASETS
from mmengine.registry import Registry

MODELS = Registry(
    'model',
    parent=MMENGINE_MODELS,
    scope='mmdistill',
    locations=[
        'mmdistill.distillers', 'mmdistill.connectors', 'mmdistill.losses'
    ])

HOOKS = Registry(
    'hook',
    parent=MMENGINE_HOOKS,
    scope='mmdistill',
    locations=['mmdistill.hooks'])

DATASETS = Registry(
    'dataset',
    parent=MMENGINE_DATASETS,
    scope='mmdistill',
    locations=['mmdistill.datasets'])
