"""Building the frozen teacher: its own config, its own registry scope, its
checkpoint loaded weights-only with a report of what fits."""
import copy
from typing import Optional

import torch.nn as nn
from mmengine.registry import MODELS as ROOT_MODELS
from mmengine.registry import DefaultScope

from mmdistill.utils.checkpoint import load_weights
from mmdistill.utils.config import load_config
from mmdistill.utils.version_guard import check_scope


def build_teacher(config: str,
                  checkpoint: Optional[str],
                  strict: bool = True,
                  cfg_options: Optional[dict] = None) -> nn.Module:
    """Build a teacher from its config in its own registry scope, load its
    weights on CPU and freeze it (eval mode, no gradients)."""
    if not checkpoint:
        raise ValueError(
            'teacher.checkpoint is required: a teacher with random weights '
            'teaches nothing. Give the weights released with '
            f'{config!r} (a local path or URL).')
    cfg = load_config(config)
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    if 'model' not in cfg:
        raise KeyError(f'The teacher config {config!r} has no "model".')
    scope = cfg.get('default_scope', None)
    check_scope(scope)
    model_cfg = copy.deepcopy(cfg.model)
    # as mmengine's Runner does: a config-level data preprocessor (the
    # mmpretrain style) is the model's when the model names none
    if model_cfg.get('data_preprocessor') is None and cfg.get(
            'data_preprocessor') is not None:
        model_cfg['data_preprocessor'] = copy.deepcopy(cfg.data_preprocessor)
    with DefaultScope.overwrite_default_scope(scope):
        teacher = ROOT_MODELS.build(model_cfg)
    load_weights(teacher, checkpoint, strict, 'teacher',
                 hint='set teacher=dict(..., strict=False)')
    teacher.requires_grad_(False)
    teacher.eval()
    return teacher


def swaps_channels(preprocessor) -> Optional[bool]:
    """Whether a data preprocessor swaps BGR and RGB (mmdet/mmengine
    ``_channel_conversion``, mmseg ``channel_conversion``, mmpretrain
    ``to_rgb``); None when it does not say."""
    for name in ('_channel_conversion', 'channel_conversion', 'to_rgb'):
        value = getattr(preprocessor, name, None)
        if value is not None:
            return bool(value)
    return None
