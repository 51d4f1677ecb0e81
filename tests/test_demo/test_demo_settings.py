"""The demo's task table, command line and configs, without training."""
import importlib.util
import os.path as osp

import pytest

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))


@pytest.fixture(scope='module')
def run_demo():
    spec = importlib.util.spec_from_file_location(
        'mmdistill_run_demo', osp.join(ROOT, 'demo', 'run_demo.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_task_runs_by_default_and_can_be_selected(run_demo):
    args = run_demo.parse_args([])
    assert args.tasks == ['seg', 'det', 'cls'] and args.seeds == [0, 1, 2]
    args = run_demo.parse_args(['--tasks', 'cls', '--methods', 'kd',
                                '--seeds', '3'])
    assert args.tasks == ['cls'] and args.methods == ['kd']
    assert args.seeds == [3]
    for mode in ('full', 'fast'):
        settings = run_demo.SETTINGS[mode]
        for task in run_demo.TASKS:
            assert task in settings['data'] and task in settings['iters']
            assert run_demo.batch_size_of(settings, task) > 0


@pytest.mark.parametrize('role', ['teacher', 'student', 'kd', 'dkd'])
def test_classification_configs(run_demo, role, tmp_path):
    pytest.importorskip('mmpretrain')
    cfg = run_demo.build_cfg('cls', role, str(tmp_path / 'data'),
                             str(tmp_path / 'work'), seed=1, iters=200,
                             batch_size=16, teacher_ckpt='teacher.pth')
    assert cfg.default_scope == 'mmpretrain'
    assert cfg.train_cfg.max_iters == 200
    assert cfg.param_scheduler[0].end == 20
    assert cfg.train_dataloader.batch_size == 16
    assert cfg.val_dataloader.dataset.data_root == str(tmp_path / 'data')
    if role in ('teacher', 'student'):
        assert cfg.model.type == 'ImageClassifier'
        return
    assert cfg.model.teacher.checkpoint == 'teacher.pth'
    loss = cfg.model.distill.logits.loss
    assert loss.type == dict(kd='KDLoss', dkd='DKDLoss')[role]
    if role == 'dkd':
        # DKD's loss warm-up follows the schedule's warm-up (10 %)
        assert loss.warmup_iters == 20
    else:
        # KD's CIFAR setting: the student's cross-entropy weighs 0.1
        assert cfg.model.student.head.loss.loss_weight == 0.1


def test_classification_student_and_validation_size(run_demo, tmp_path):
    """The w8 student (its head reads the last stage's 8 x base channels)
    in every student config, and enough validation crops that the seeds'
    spread is not the validation split's sampling noise (200 scenes, 310
    crops: +-2.6 points by itself)."""
    pytest.importorskip('mmpretrain')
    assert run_demo.SETTINGS['full']['data']['cls']['splits']['val'] >= 1000
    for role in ('student', 'kd', 'dkd'):
        cfg = run_demo.build_cfg('cls', role, str(tmp_path / 'data'),
                                 str(tmp_path / 'work'), seed=0, iters=10,
                                 batch_size=4, teacher_ckpt='teacher.pth')
        model = cfg.model.get('student', cfg.model)
        assert model.backbone.base_channels == 8
        assert model.head.in_channels == 8 * model.backbone.base_channels


@pytest.mark.parametrize('argv, wrong', [
    (['--tasks', 'cls', '--methods', 'kdd'], "'kdd' (unknown method)"),
    (['--tasks', 'cls', '--methods', 'kd', 'mlp'],
     "'mlp' (no config for --tasks cls)"),
    (['--tasks', 'seg', 'det', '--methods', 'dkd'],
     "'dkd' (no config for --tasks seg det)"),
])
def test_a_method_without_a_config_stops(run_demo, capsys, argv, wrong):
    """A typo in --methods used to run only the teacher and the student
    alone, and exit 0."""
    with pytest.raises(SystemExit) as exc:
        run_demo.parse_args(['--fast', *argv])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert wrong in err
    assert ('methods per task are seg: mlp cwd; det: mlp fgd; cls: kd dkd'
            in err)


def test_methods_of_any_chosen_task_are_accepted(run_demo):
    args = run_demo.parse_args(['--tasks', 'seg', 'det', '--methods', 'cwd',
                                'fgd'])
    assert args.methods == ['cwd', 'fgd']
    assert run_demo.methods_of('cls') == ['kd', 'dkd']
