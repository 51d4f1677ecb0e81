"""mmdistill.utils.config: the student's own config out of a distillation
config (what tools/test.py, the exports and plain mmdet/mmseg use)."""
from mmengine.config import Config

from mmdistill.utils.config import student_config


def test_student_config_keeps_what_the_distiller_gave_the_student():
    cfg = Config(dict(
        model=dict(
            type='SingleTeacherDistiller',
            student=dict(type='EncoderDecoder', backbone=dict(type='R')),
            teacher=dict(config='t.py', checkpoint='t.pth'),
            distill=dict(),
            data_preprocessor=dict(type='SegDataPreProcessor', size=(8, 8))),
        custom_imports=dict(imports=['mmdistill', 'mypkg']),
        custom_hooks=[dict(type='mmdistill.StudentCheckpointHook'),
                      dict(type='EMAHook')],
        default_hooks=dict(
            checkpoint=dict(type='CheckpointHook', interval=1),
            student_checkpoint=dict(type='mmdistill.StudentCheckpointHook'),
            rng_state=dict(type='mmdistill.RNGStateHook')),
        distill_hooks=dict(rng_state=dict(type='mmdistill.RNGStateHook')),
        load_from='x.pth', resume=True))
    plain = student_config(cfg)
    # the distiller's data_preprocessor served the student, which had none
    assert plain.model == dict(
        type='EncoderDecoder', backbone=dict(type='R'),
        data_preprocessor=dict(type='SegDataPreProcessor', size=(8, 8)))
    assert plain.custom_imports.imports == ['mypkg']
    assert plain.custom_hooks == [dict(type='EMAHook')]
    assert plain.default_hooks == dict(
        checkpoint=dict(type='CheckpointHook', interval=1))
    assert 'distill_hooks' not in plain
    assert plain.load_from is None and plain.resume is False
    # a student with its own keeps it
    cfg.model.student.data_preprocessor = dict(type='Own')
    assert student_config(cfg).model.data_preprocessor == dict(type='Own')
    assert student_config(Config(dict(model=dict(type='X')))) is None


def test_a_misspelled_scoped_config_names_the_closest_shipped_ones():
    """A ``mmseg::`` path that does not exist: the closest files of its
    folder (or the closest folders), and none of mmengine's list of every
    config it knows."""
    import pytest

    from mmdistill.utils.config import load_config
    written = 'mmseg::pspnet/pspnet_r18-d8_4xb2-80k_cityscape-512x1024.py'
    with pytest.raises(FileNotFoundError) as err:
        load_config(written)
    message = str(err.value)
    assert ('closest: mmseg::pspnet/'
            'pspnet_r18-d8_4xb2-80k_cityscapes-512x1024.py') in message
    assert err.value.__cause__ is None and err.value.__suppress_context__
    assert len(message) < 1200

    with pytest.raises(FileNotFoundError, match=r'closest: mmseg::pspnet/'):
        load_config('mmseg::pspnt/pspnet_r18-d8_4xb2-80k_cityscapes-'
                    '512x1024.py')


def test_a_shipped_config_that_fails_to_load_keeps_its_cause(monkeypatch):
    """A file that exists but does not load is not called missing: no
    closest names, and the original error stays chained."""
    import mmengine.hub
    import pytest

    from mmdistill.utils.config import load_config

    def broken(path):
        raise ImportError('a module the config imports is missing')

    monkeypatch.setattr(mmengine.hub, 'get_config', broken)
    path = 'mmseg::pspnet/pspnet_r18-d8_4xb2-80k_cityscapes-512x1024.py'
    with pytest.raises(FileNotFoundError) as err:
        load_config(path)
    assert 'a module the config imports is missing' in str(err.value)
    assert 'closest' not in str(err.value)
    assert isinstance(err.value.__cause__, ImportError)


def test_hook_types_are_looked_up_where_the_runner_builds_them():
    """In the config's default scope, or the hook's own ``_scope_``;
    mmdistill's hooks with their prefix."""
    from mmdistill.utils.config import hook_type_errors
    cfg = Config(dict(default_scope='mmpretrain', custom_hooks=[
        dict(type='MeanTeacherHook', _scope_='mmdet'),
        dict(type='mmdet.MeanTeacherHook'),
        dict(type='mmdistill.StudentCheckpointHook'),
        dict(type='EMAHook'),
        dict(type='MeanTeacherHook'),
    ]))
    assert hook_type_errors(cfg) == [
        "custom_hooks[4].type='MeanTeacherHook' is not a registered hook "
        "(did you mean 'mmdet.MeanTeacherHook'?)"]


def test_lists_that_replace_the_students_are_named(tmp_path):
    """A distillation config written the old way (custom_imports and
    custom_hooks of its own) drops the student config's EMAHook and its
    project's modules; the new way (default_hooks) keeps them."""
    from mmdistill.utils.config import lost_from_student
    (tmp_path / 'student.py').write_text(
        "model = dict(type='RetinaNet', backbone=dict(type='ResNet'))\n"
        "custom_imports = dict(imports=['mmdistill.testing'])\n"
        "custom_hooks = [dict(type='EMAHook'), dict(type='mmdet."
        "PipelineSwitchHook', switch_epoch=1)]\n")
    head = ("_base_ = ['student.py']\n"
            "model = dict(_delete_=True, type='mmdistill."
            "SingleTeacherDistiller', student={{_base_.model}}, "
            "teacher=dict(config='t.py'), distill=dict())\n")
    old = tmp_path / 'old.py'
    old.write_text(head + "custom_imports = dict(imports=['mmdistill'])\n"
                   "custom_hooks = [dict(type='mmdistill."
                   "StudentCheckpointHook')]\n")
    hooks, imports = lost_from_student(str(old), Config.fromfile(str(old)))
    student = str(tmp_path / 'student.py')
    assert (f'custom_hooks of old.py replaces the list of its student '
            f'config {student}: its EMAHook, PipelineSwitchHook no longer '
            'run') in hooks
    assert "[*_base_.get('custom_hooks', []), ...]" in hooks
    assert (f'custom_imports of old.py replaces the list of its student '
            f'config {student}: mmdistill.testing is not imported') in imports

    new = tmp_path / 'new.py'
    new.write_text(head + (
        "custom_hooks = [*_base_.get('custom_hooks', []), "
        "dict(type='mmdistill.FeatureStatsHook')]\n"
        "default_hooks = dict(student_checkpoint=dict("
        "type='mmdistill.StudentCheckpointHook'))\n"))
    assert lost_from_student(str(new), Config.fromfile(str(new))) == []


def test_hooks_that_cannot_run_on_a_distiller_are_named():
    from mmdistill.utils.config import unsafe_hook_errors
    problems = unsafe_hook_errors([dict(type='EMAHook'),
                                   dict(type='mmdet.MeanTeacherHook')])
    assert len(problems) == 1
    assert problems[0].startswith("MeanTeacherHook: mmdet's MeanTeacherHook "
                                  'averages model.student into '
                                  'model.teacher')
