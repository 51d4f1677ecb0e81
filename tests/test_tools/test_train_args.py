"""tools/train.py's command line, checked before the Runner is built:
``--amp`` without a device mmengine's AmpOptimWrapper trains on,
``--auto-scale-lr`` (mmdet's and mmpretrain's semantics) and ``--resume``
with a checkpoint that does not exist. In process, on shrunken shipped
configs; nothing trains."""
import os.path as osp

import pytest
from mmengine.config import Config

from tools_support import ROOT, load_script, write_tiny_config

TOOL = osp.join(ROOT, 'tools', 'train.py')


@pytest.fixture(scope='module')
def train():
    return load_script(TOOL, 'mmdistill_tools_train')


@pytest.fixture(scope='module')
def configs(tmp_path_factory):
    """A detection config (its mmdet base has ``auto_scale_lr``) and a
    segmentation one (mmseg's have none)."""
    root = str(tmp_path_factory.mktemp('train_args'))
    return dict(det=write_tiny_config('retinanet', root, length=1,
                                      probe=False),
                seg=write_tiny_config('pspnet', root, length=1,
                                      probe=False))


def stops(train, argv) -> str:
    """The one-line message ``main(argv)`` stops with."""
    with pytest.raises(SystemExit) as exc:
        train.main(argv)
    message = exc.value.code
    assert isinstance(message, str) and message.startswith('error: ')
    assert '\n' not in message
    return message


@pytest.mark.parametrize('device', ['cpu', 'mps'])
def test_amp_without_an_amp_device_stops_before_the_runner(
        train, configs, tmp_path, monkeypatch, device):
    """It ended in mmengine's AssertionError 'AmpOptimizerWrapper is only
    available training on gpu, npu, mlu or musa' from the Runner."""
    import mmengine.device
    monkeypatch.setattr(mmengine.device, 'get_device', lambda: device)
    work_dir = str(tmp_path / 'work')
    message = stops(train, [configs['det'], '--work-dir', work_dir, '--amp'])
    assert '--amp needs a CUDA, NPU, MLU or MUSA device' in message
    assert f"this runs on '{device}'. Drop --amp" in message
    # the cheaper teacher that works on the CPU (a distillation config)
    assert ('--cfg-options model.teacher.dtype=bfloat16' in message) == (
        device == 'cpu')
    assert not osp.exists(work_dir)


def test_amp_device_check():
    from mmdistill.utils.setup_env import AMP_DEVICES, amp_device_error
    assert AMP_DEVICES == ('cuda', 'npu', 'mlu', 'musa')
    for device in AMP_DEVICES:
        assert amp_device_error(device, '--amp') is None
    assert 'Drop --amp.' in amp_device_error('cpu', '--amp')


@pytest.mark.parametrize('device', ['cuda', 'npu'])
def test_amp_on_an_amp_device(train, configs, monkeypatch, device):
    import mmengine.device
    monkeypatch.setattr(mmengine.device, 'get_device', lambda: device)
    cfg = train.setup_cfg(train.parse_args([configs['det'], '--amp']))
    assert cfg.optim_wrapper.type == 'AmpOptimWrapper'
    assert cfg.optim_wrapper.loss_scale == 'dynamic'


def test_auto_scale_lr(train, configs, tmp_path):
    """As mmdet's and mmpretrain's train.py: the flag enables the config's
    ``auto_scale_lr``; the Runner then scales the learning rate by the
    real batch size over ``base_batch_size``."""
    assert Config.fromfile(configs['det']).auto_scale_lr.enable is False
    args = train.parse_args([configs['det'], '--work-dir',
                             str(tmp_path / 'work')])
    assert not args.auto_scale_lr
    assert train.setup_cfg(args).auto_scale_lr.enable is False
    cfg = train.setup_cfg(train.parse_args([
        configs['det'], '--work-dir', str(tmp_path / 'work'),
        '--auto-scale-lr', '--cfg-options', 'auto_scale_lr.base_batch_size=1'
    ]))
    assert cfg.auto_scale_lr == dict(enable=True, base_batch_size=1)

    from mmengine.runner import Runner
    runner = Runner.from_cfg(cfg)
    assert runner.auto_scale_lr == cfg.auto_scale_lr
    wrapper = runner.build_optim_wrapper(cfg.optim_wrapper)
    lr = wrapper.optimizer.param_groups[0]['lr']
    runner.scale_lr(wrapper, runner.auto_scale_lr)
    batch_size = cfg.train_dataloader.batch_size
    assert batch_size > 1
    assert wrapper.optimizer.param_groups[0]['lr'] == pytest.approx(
        lr * batch_size)


@pytest.mark.parametrize('options, found', [
    ([], 'has no auto_scale_lr'),
    (['--cfg-options', 'auto_scale_lr.enable=False'],
     "has auto_scale_lr = {'enable': False}"),
])
def test_auto_scale_lr_without_a_base_batch_size(train, configs, tmp_path,
                                                 options, found):
    work_dir = str(tmp_path / 'work')
    message = stops(train, [
        configs['seg'], '--work-dir', work_dir, '--auto-scale-lr', *options
    ])
    assert ('--auto-scale-lr needs auto_scale_lr = dict(base_batch_size=N) '
            'in the config') in message
    assert f'the config {found}.' in message
    assert '--cfg-options auto_scale_lr.base_batch_size=N' in message
    assert not osp.exists(work_dir)


@pytest.mark.parametrize('missing', ['no_such.pth', 'a_directory'])
def test_resume_from_a_checkpoint_that_does_not_exist(
        train, configs, tmp_path, missing):
    """It ended in a traceback with mmengine's FileNotFoundError after the
    Runner was built."""
    (tmp_path / 'a_directory').mkdir()
    path = str(tmp_path / missing)
    work_dir = str(tmp_path / 'work')
    message = stops(train, [
        configs['det'], '--work-dir', work_dir, '--resume', path
    ])
    assert f'the checkpoint given to --resume, {path!r},' in message
    assert ('is a directory' if missing == 'a_directory' else
            'does not exist') in message
    assert ('--resume without a value to resume from the latest checkpoint '
            f'of the work dir ({work_dir})') in message
    assert not osp.exists(work_dir)


@pytest.mark.parametrize('resume', [
    None, 'https://download.openmmlab.com/no/such/file.pth',
    'open-mmlab://no_such_model', 'teacher'
])
def test_resume_without_a_value_from_a_url_or_a_file(train, configs,
                                                     resume):
    """No value: the work dir's latest checkpoint; a URL is the loader's to
    fetch (not checked here); an existing file."""
    if resume == 'teacher':
        resume = Config.fromfile(configs['det']).model.teacher.checkpoint
    cfg = train.setup_cfg(train.parse_args(
        [configs['det'], '--resume'] + ([resume] if resume else [])))
    assert cfg.resume is True
    assert cfg.load_from == resume


def test_resume_without_a_value_after_the_last_checkpoint_went(
        train, configs, tmp_path):
    """mmengine resumes from the file ``last_checkpoint`` names; when it
    was deleted (a corrupt last checkpoint removed by hand), the tool names
    it and the checkpoint left to resume from, before building anything."""
    work_dir = tmp_path / 'work'
    work_dir.mkdir()
    # the latest runner checkpoint left is suggested: not a best_* one nor
    # a student export (newer files)
    for name in ('iter_1.pth', 'iter_2.pth', 'best_mIoU_iter_9.pth',
                 'iter_2_student.pth', 'iter_2_student-replaced.pth',
                 'iter_12_student-1.pth'):
        (work_dir / name).write_bytes(b'x')
    gone = str(work_dir / 'iter_3.pth')
    (work_dir / 'last_checkpoint').write_text(gone)
    message = stops(train, [configs['det'], '--work-dir', str(work_dir),
                            '--resume'])
    assert f'names, {gone}, which no longer exists' in message
    assert f"--resume {work_dir / 'iter_2.pth'}" in message
    # a last_checkpoint that names an existing file: resumed as before
    (work_dir / 'last_checkpoint').write_text(str(work_dir / 'iter_2.pth'))
    cfg = train.setup_cfg(train.parse_args(
        [configs['det'], '--work-dir', str(work_dir), '--resume']))
    assert cfg.resume is True and cfg.load_from is None


def test_mmpretrain_dataloader_defaults_and_flags(train, configs, tmp_path):
    """As mmpretrain's train.py: its configs' dataloaders get pinned
    memory, persistent workers and ``default_collate`` where they set
    nothing; ``--no-pin-memory``, ``--no-persistent-workers`` and
    ``--no-validate`` for any config."""
    kd = osp.join(ROOT, 'configs', 'kd', 'kd_logits_resnet34_resnet18_100e_'
                  'in1k.py')
    work = ['--work-dir', str(tmp_path / 'work')]
    cfg = train.setup_cfg(train.parse_args([kd] + work))
    for key in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        loader = cfg[key]
        assert loader.num_workers > 0
        assert loader.pin_memory is True
        assert loader.persistent_workers is True
        assert loader.collate_fn == dict(type='default_collate')
    assert cfg.val_cfg is not None
    cfg = train.setup_cfg(train.parse_args(
        [kd, '--no-pin-memory', '--no-persistent-workers', '--no-validate']
        + work))
    assert cfg.train_dataloader.pin_memory is False
    assert cfg.train_dataloader.persistent_workers is False
    assert cfg.val_cfg is None and cfg.val_dataloader is None
    assert cfg.val_evaluator is None
    # an mmdet config keeps its own dataloaders (mmdet's train.py adds none)
    cfg = train.setup_cfg(train.parse_args([configs['det']] + work))
    assert 'collate_fn' not in cfg.train_dataloader
    assert 'pin_memory' not in cfg.train_dataloader


def test_a_hook_unsafe_on_a_distiller_stops_and_lost_hooks_are_named(
        train, configs, tmp_path):
    """mmdet's MeanTeacherHook stops before the Runner; a config whose own
    custom_hooks list replaced its student config's names what was lost."""
    cfg = Config.fromfile(configs['seg'])
    cfg.custom_hooks = [dict(type='mmdet.MeanTeacherHook')]
    config = str(tmp_path / 'mean_teacher.py')
    cfg.dump(config)
    work_dir = str(tmp_path / 'work')
    assert 'would overwrite the frozen teacher' in stops(
        train, [config, '--work-dir', work_dir])
    assert not osp.exists(work_dir)

    student = tmp_path / 'student.py'
    plain = Config(cfg.to_dict())
    plain.model = cfg.model.student
    plain.custom_hooks = [dict(type='EMAHook')]
    plain.pop('default_hooks')
    plain.dump(str(student))
    distill = tmp_path / 'distill.py'
    distill.write_text(
        "_base_ = ['student.py']\n"
        f'model = dict(_delete_=True, **{cfg.model.to_dict()!r})\n'
        "custom_hooks = [dict(type='mmdistill.StudentCheckpointHook')]\n")
    with pytest.warns(UserWarning, match='its EMAHook no longer run'):
        train.setup_cfg(train.parse_args([str(distill), '--work-dir',
                                          work_dir]))


def test_old_hook_extension_is_named_and_none_turns_a_hook_off(
        train, configs, tmp_path):
    """A config that extended its base's hooks with _base_.custom_hooks
    (the distiller bases have none now) stops naming the new form;
    default_hooks.rng_state=None turns mmdistill's hook off (mmengine's
    Runner asserts on None for hooks other than its own)."""
    config = tmp_path / 'extends.py'
    config.write_text(f"_base_ = [{configs['seg']!r}]\n"
                      'custom_hooks = [*_base_.custom_hooks, '
                      "dict(type='mmdistill.FeatureStatsHook')]\n")
    work_dir = str(tmp_path / 'work')
    message = stops(train, [str(config), '--work-dir', work_dir])
    assert "custom_hooks = [*_base_.get('custom_hooks', []), ...]" in message
    cfg = train.setup_cfg(train.parse_args([
        configs['seg'], '--work-dir', work_dir, '--cfg-options',
        'default_hooks.rng_state=None']))
    assert 'rng_state' not in cfg.default_hooks
    assert cfg.default_hooks.student_checkpoint.type == \
        'mmdistill.StudentCheckpointHook'


def test_a_misspelled_hook_stops_before_the_runner(train, configs, tmp_path):
    """mmengine's KeyError names the student's scope's registry and no
    close name; an mmdistill hook without its prefix is not found there."""
    cfg = Config.fromfile(configs['seg'])
    n = len(cfg.get('custom_hooks') or [])
    cfg.custom_hooks = [*(cfg.get('custom_hooks') or []),
                        dict(type='mmdistill.FeatureStatHook'),
                        dict(type='DistillLossScheduleHook')]
    cfg.default_hooks.student_checkpoint.type = \
        'mmdistill.StudentCheckpointHok'
    config = str(tmp_path / 'hooks.py')
    cfg.dump(config)
    work_dir = str(tmp_path / 'work')
    message = stops(train, [config, '--work-dir', work_dir])
    assert (f"custom_hooks[{n}].type='mmdistill.FeatureStatHook' is not a "
            "registered hook (did you mean 'mmdistill.FeatureStatsHook'?)"
            ) in message
    assert (f"custom_hooks[{n + 1}].type='DistillLossScheduleHook' is not a "
            "registered hook (did you mean "
            "'mmdistill.DistillLossScheduleHook'?)") in message
    assert ("default_hooks.student_checkpoint.type="
            "'mmdistill.StudentCheckpointHok' is not a registered hook (did "
            "you mean 'mmdistill.StudentCheckpointHook'?)") in message
    assert not osp.exists(work_dir)
