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
        load_from='x.pth', resume=True))
    plain = student_config(cfg)
    # the distiller's data_preprocessor served the student, which had none
    assert plain.model == dict(
        type='EncoderDecoder', backbone=dict(type='R'),
        data_preprocessor=dict(type='SegDataPreProcessor', size=(8, 8)))
    assert plain.custom_imports.imports == ['mypkg']
    assert plain.custom_hooks == [dict(type='EMAHook')]
    assert plain.load_from is None and plain.resume is False
    # a student with its own keeps it
    cfg.model.student.data_preprocessor = dict(type='Own')
    assert student_config(cfg).model.data_preprocessor == dict(type='Own')
    assert student_config(Config(dict(model=dict(type='X')))) is None
