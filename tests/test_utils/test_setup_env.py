"""prepare_config / init_distributed: what the tools change so that a config
runs in several CPU processes."""
import pytest
import torch
from mmengine.config import Config

from mmdistill.utils.setup_env import init_distributed, prepare_config

cpu_only = pytest.mark.skipif(
    torch.cuda.is_available(), reason='the CPU fallbacks apply without CUDA')


def seg_config(**extra):
    norm = dict(type='SyncBN', requires_grad=True)
    return Config(
        dict(
            model=dict(
                type='mmdistill.SingleTeacherDistiller',
                student=dict(
                    type='EncoderDecoder',
                    backbone=dict(type='ResNetV1c', norm_cfg=norm),
                    decode_head=dict(type='PSPHead', norm_cfg=norm),
                    auxiliary_head=[dict(type='FCNHead', norm_cfg=norm)]),
                teacher=dict(config='t.py', checkpoint='t.pth')),
            custom_hooks=[dict(type='mmdistill.StudentCheckpointHook')],
            **extra))


@cpu_only
def test_single_process_keeps_the_model():
    cfg = seg_config(launcher='none')
    prepare_config(cfg)
    assert cfg.env_cfg.dist_cfg.backend == 'gloo'
    assert 'model_wrapper_cfg' not in cfg  # mmengine reverts SyncBN itself
    assert cfg.model.student.backbone.norm_cfg.type == 'SyncBN'
    assert [h['type'] for h in cfg.custom_hooks] == [
        'mmdistill.StudentCheckpointHook'
    ]


@cpu_only
def test_multi_process_on_cpu():
    cfg = seg_config(launcher='pytorch')
    prepare_config(cfg)
    assert cfg.env_cfg.dist_cfg.backend == 'gloo'
    # DDP takes no device_ids for a CPU module; no unused-parameter search
    assert cfg.model_wrapper_cfg == dict(
        type='MMDistributedDataParallel',
        broadcast_buffers=False,
        find_unused_parameters=False,
        device_ids=None)
    student = cfg.model.student
    assert student.backbone.norm_cfg.type == 'BN'
    assert student.decode_head.norm_cfg.type == 'BN'
    assert student.auxiliary_head[0].norm_cfg.type == 'BN'
    assert [h['type'] for h in cfg.custom_hooks] == [
        'mmdistill.StudentCheckpointHook', 'SyncBuffersHook'
    ]
    # a second call changes nothing
    before = cfg.pretty_text
    prepare_config(cfg)
    assert cfg.pretty_text == before


@cpu_only
def test_user_choices_are_kept():
    cfg = seg_config(
        launcher='slurm',
        env_cfg=dict(dist_cfg=dict(backend='mpi', timeout=60)),
        find_unused_parameters=True,
        model_wrapper_cfg=dict(
            type='MMDistributedDataParallel', broadcast_buffers=True))
    prepare_config(cfg)
    assert cfg.env_cfg.dist_cfg == dict(backend='mpi', timeout=60)
    assert cfg.model_wrapper_cfg == dict(
        type='MMDistributedDataParallel',
        broadcast_buffers=True,
        device_ids=None)


@cpu_only
def test_default_find_unused_parameters_follows_the_config():
    cfg = seg_config(launcher='pytorch', find_unused_parameters=True)
    prepare_config(cfg)
    assert cfg.model_wrapper_cfg.find_unused_parameters is True


def test_init_distributed_does_nothing_for_one_process():
    cfg = seg_config(launcher='none')
    prepare_config(cfg)
    assert init_distributed(cfg) is False
    assert not torch.distributed.is_initialized()
