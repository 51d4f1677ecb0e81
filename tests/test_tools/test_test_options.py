"""tools/test.py: --tta (weights loaded into the model the TTA wrapper
holds; a missing tta_model / tta_pipeline filled in as mmdet's and
mmpretrain's test.py do, required as mmseg's does), mmpretrain's --out-item,
--amp and --no-pin-memory, the config dumped under the given config's name,
and a stock-style ``model.<key>`` in --cfg-options of a distillation config
stopping the run instead of being dropped."""
import glob
import json
import os
import os.path as osp
import sys

import pytest
import torch
from mmengine.config import Config
from mmengine.model import BaseModel, BaseTTAModel

from conftest import run_tool
from tools_support import DEMO_DISTILL as DISTILL
from tools_support import (ROOT, load_script, tiny_student_weights,
                           write_tiny_config)

TOOL = osp.join(ROOT, 'tools', 'test.py')
FLIP = [dict(type='RandomFlip', prob=1.), dict(type='RandomFlip', prob=0.)]


@pytest.fixture(scope='module')
def tool():
    return load_script(TOOL, 'mmdistill_tools_test_options')


def setup(tool, scope, *options):
    return tool.setup_cfg(tool.parse_args(
        [DISTILL[scope], 'x.pth', '--work-dir', 'W', *options]))


# ------------------------------------------------------------ 1. --tta loads
class _Tiny(BaseModel):

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4, 3)
        self.bn = torch.nn.BatchNorm2d(4)

    def forward(self, inputs, data_samples=None, mode='tensor'):
        return self.bn(self.conv(inputs))


class _TTA(BaseTTAModel):

    def merge_preds(self, data_samples_list):
        return data_samples_list


@pytest.mark.parametrize('prefix', ['', 'student.'])
def test_tta_model_gets_the_weights(tool, tmp_path, prefix):
    """The reviewer's ``--tta``: the TTA model keeps the student in
    ``.module``; every weight was reported missing (``module.conv...``)."""
    trained = _Tiny()
    for p in trained.parameters():
        torch.nn.init.normal_(p)
    path = str(tmp_path / 'ckpt.pth')
    torch.save(dict(state_dict={prefix + k: v for k, v in
                                trained.state_dict().items()}, meta={}),
               path)
    model = _TTA(module=_Tiny())
    tool.load_weights(model, path)
    for key, value in trained.state_dict().items():
        assert torch.equal(model.module.state_dict()[key], value), key


# ------------------------------------------------- 2. default TTA per scope
def test_tta_defaults_of_mmdet(tool, caplog):
    """As mmdet 3.3's test.py: DetTTAModel and a flip before a
    PackDetInputs that keeps the flip (it stopped: "--tta needs
    tta_model and tta_pipeline")."""
    pytest.importorskip('mmdet')
    cfg = setup(tool, 'mmdet', '--tta')
    assert cfg.model.type == 'DetTTAModel'
    assert cfg.model.tta_cfg == dict(
        nms=dict(type='nms', iou_threshold=0.5), max_per_img=100)
    assert cfg.model.module.type == 'RetinaNet'
    test_pipeline = Config.fromfile(
        DISTILL['mmdet']).test_dataloader.dataset.pipeline
    pipeline = cfg.test_dataloader.dataset.pipeline
    assert pipeline[:-1] == test_pipeline[:-1]
    assert pipeline[-1].type == 'TestTimeAug'
    flip, (pack, ) = pipeline[-1].transforms
    assert flip == FLIP
    assert pack.type == 'PackDetInputs'
    assert {'flip', 'flip_direction', 'img_id'} <= set(pack.meta_keys)
    assert pipeline == cfg.tta_pipeline


def test_tta_defaults_of_mmpretrain(tool):
    """As mmpretrain 1.2.0's test.py: AverageClsScoreTTA, a flip before
    the test pipeline's own last transform."""
    pytest.importorskip('mmpretrain')
    cfg = setup(tool, 'mmpretrain', '--tta')
    assert cfg.model.type == 'mmpretrain.AverageClsScoreTTA'
    assert cfg.model.module.type == 'ImageClassifier'
    test_pipeline = Config.fromfile(
        DISTILL['mmpretrain']).test_dataloader.dataset.pipeline
    pipeline = cfg.test_dataloader.dataset.pipeline
    assert pipeline[:-1] == test_pipeline[:-1]
    assert pipeline[-1].transforms == [FLIP, [test_pipeline[-1]]]


def test_tta_of_the_config_is_kept(tool):
    cfg = setup(tool, 'mmdet', '--tta', '--cfg-options',
                'tta_model.type=DetTTAModel', 'tta_model.tta_cfg.nms.'
                'iou_threshold=0.6', 'tta_model.tta_cfg.max_per_img=5')
    assert cfg.model.tta_cfg == dict(nms=dict(iou_threshold=0.6),
                                     max_per_img=5)


def test_mmseg_needs_both_in_the_config(tool):
    """mmseg's test.py takes them from the config (its default_runtime.py
    gives tta_model; the demo's dataset config has no tta_pipeline)."""
    pytest.importorskip('mmseg')
    with pytest.raises(SystemExit) as exc:
        setup(tool, 'mmseg', '--tta')
    message = exc.value.code
    assert message.startswith('error: --tta needs tta_pipeline in the '
                              "config (default_scope 'mmseg')")
    assert "mmseg: tta_model = dict(type='SegTTAModel')" in message


# --------------------------------------------- 3. mmpretrain's test options
def test_amp_sets_fp16_as_mmpretrain(tool):
    for scope in ('mmpretrain', 'mmdet'):
        assert setup(tool, scope, '--amp').test_cfg.fp16 is True
        assert 'fp16' not in setup(tool, scope).test_cfg
    # mmpretrain merges --cfg-options after --amp
    assert setup(tool, 'mmpretrain', '--amp', '--cfg-options',
                 'test_cfg.fp16=False').test_cfg.fp16 is False


def test_pin_memory_as_mmpretrain(tool):
    """mmpretrain's test.py pins memory and collates with default_collate
    unless the config says otherwise; --no-pin-memory turns pinning off
    (every codebase)."""
    loader = setup(tool, 'mmpretrain').test_dataloader
    assert loader.pin_memory is True
    assert loader.collate_fn == dict(type='default_collate')
    assert setup(tool, 'mmpretrain',
                 '--no-pin-memory').test_dataloader.pin_memory is False
    assert setup(tool, 'mmpretrain', '--cfg-options',
                 'test_dataloader.pin_memory=False'
                 ).test_dataloader.pin_memory is False
    # mmdet's test.py leaves the dataloader as the config has it
    assert 'pin_memory' not in setup(tool, 'mmdet').test_dataloader
    assert 'collate_fn' not in setup(tool, 'mmdet').test_dataloader
    assert setup(tool, 'mmdet',
                 '--no-pin-memory').test_dataloader.pin_memory is False


@pytest.mark.parametrize('argv,problem', [
    (['--out-item', 'metrics'], 'give --out too'),
    (['--out', 'm.txt', '--out-item', 'metrics'],
     "ending with .json, .yaml, .yml, .pkl, .pickle; got --out 'm.txt'"),
])
def test_out_item_needs_a_fitting_out(tool, capsys, argv, problem):
    with pytest.raises(SystemExit):
        tool.parse_args(['c.py', 'x.pth', *argv])
    assert problem in capsys.readouterr().err


def test_out_item_metrics_takes_a_json_file(tool):
    """Without --out-item metrics a .json --out is refused (not a pkl)."""
    args = tool.parse_args([DISTILL['mmdet'], 'x.pth', '--work-dir', 'W',
                            '--out', 'm.json', '--out-item', 'metrics'])
    assert args.out_item == 'metrics'
    tool.setup_cfg(args)
    with pytest.raises(SystemExit) as exc:
        setup(tool, 'mmdet', '--out', 'm.json')
    assert '--out-item metrics' in exc.value.code


# ---------------------------------------------- 4. the dumped config's name
@pytest.mark.parametrize('scope', ['mmdet', 'mmseg', 'mmpretrain'])
def test_config_keeps_its_file_name(tool, scope):
    """The Runner dumps work_dir/<basename of cfg.filename>; the student
    config of a distillation config had none: <timestamp>.py. Not the
    distillation config's own name: training dumped that one into the
    same (default) work dir, and a rerun of it must find it."""
    cfg = setup(tool, scope)
    assert cfg.filename == DISTILL[scope][:-len('.py')] + '_student.py'
    assert 'student' not in cfg.model


# ------------------------------- 5. stock-style model.<key> of a distiller
@pytest.mark.parametrize('option,fix', [
    ('model.test_cfg.mode=slide', 'model.student.test_cfg.mode=slide'),
    ('model.data_preprocessor.mean=[1,2,3]',
     'model.student.data_preprocessor.mean=[1,2,3]'),
    ('model.decode_head.num_classes=3',
     'model.student.decode_head.num_classes=3'),
])
def test_stock_style_model_key_stops(tool, option, fix):
    """``model.test_cfg.mode=slide`` on a distillation config was merged
    into the distiller and dropped with it: the test ran with 'whole'."""
    with pytest.raises(SystemExit) as exc:
        setup(tool, 'mmseg', '--cfg-options', option)
    message = exc.value.code
    assert message.startswith(f'error: --cfg-options {option.split("=")[0]}'
                              ': the model of mlp_backbone_pspnet_r50-'
                              'r18_synth.py is a distiller')
    assert message.endswith(f'--cfg-options {fix}')


@pytest.mark.parametrize('option', [
    'model.student.test_cfg.mode=slide', 'model.teacher.checkpoint=t.pth',
    'model.distill.stage4.loss.loss_weight=1.0', 'model.guard.action=warn'])
def test_distiller_keys_pass(tool, option):
    cfg = setup(tool, 'mmseg', '--cfg-options', option)
    assert cfg.model.test_cfg.mode == (
        'slide' if 'student' in option else 'whole')


def test_distiller_data_preprocessor_of_a_student_without_one(
        tool, tmp_path):
    """The distiller's data_preprocessor serves a student that has none:
    model.data_preprocessor.<key> reaches the tested student there."""
    cfg = Config.fromfile(DISTILL['mmseg'])
    cfg.model.data_preprocessor = cfg.model.student.pop('data_preprocessor')
    path = str(tmp_path / 'distill.py')
    cfg.dump(path)
    tested = tool.setup_cfg(tool.parse_args(
        [path, 'x.pth', '--cfg-options',
         'model.data_preprocessor.mean=[1,2,3]']))
    assert tested.model.data_preprocessor.mean == [1, 2, 3]
    assert tested.model.data_preprocessor.type == cfg.model.\
        data_preprocessor.type


def test_student_config_takes_stock_keys(tool, tmp_path):
    """A plain (student) config is not a distiller: model.<key> is its."""
    from mmdistill.utils.config import student_config
    path = str(tmp_path / 'student.py')
    student_config(Config.fromfile(DISTILL['mmseg'])).dump(path)
    cfg = tool.setup_cfg(tool.parse_args(
        [path, 'x.pth', '--cfg-options', 'model.test_cfg.mode=slide']))
    assert cfg.model.test_cfg.mode == 'slide'


# -------------------------------------------------------------- end to end
def _metrics(work_dir):
    files = glob.glob(osp.join(work_dir, '*', '*.json'))
    assert len(files) == 1, files
    with open(files[0]) as f:
        return json.loads(f.readlines()[-1])


@pytest.mark.slow
def test_mmseg_tta_run(tmp_path):
    """The reviewer's run: an mmseg student with --tta, from the
    distillation config with a distiller (runner) checkpoint and from a
    student config with the student's weights: same metrics; the config
    is dumped as <config name>.py; --out-item metrics writes them."""
    pytest.importorskip('mmseg')
    from mmdistill.utils.config import student_config
    root = str(tmp_path)
    config, cfg, student = tiny_student_weights('pspnet', root)
    state = torch.load(student, map_location='cpu')['state_dict']
    runner_ckpt = osp.join(root, 'iter_1.pth')
    torch.save(dict(state_dict={f'student.{k}': v for k, v in state.items()},
                    meta=dict(iter=1)), runner_ckpt)
    student_cfg = osp.join(root, 'student_config.py')
    student_config(cfg).dump(student_cfg)

    out = osp.join(root, 'metrics.json')
    result = run_tool([sys.executable, TOOL, config, runner_ckpt, '--tta',
                       '--work-dir', f'{root}/a', '--out', out,
                       '--out-item', 'metrics'])
    assert 'a distiller checkpoint, its student is tested' in result.stdout
    metrics = _metrics(f'{root}/a')
    assert 'mIoU' in metrics
    with open(out) as f:
        assert json.load(f)['mIoU'] == metrics['mIoU']
    assert sorted(f for f in os.listdir(f'{root}/a')
                  if f.endswith('.py')) == ['pspnet_student.py']

    run_tool([sys.executable, TOOL, student_cfg, student, '--tta',
              '--work-dir', f'{root}/b'])
    assert _metrics(f'{root}/b')['mIoU'] == metrics['mIoU']
    assert osp.isfile(f'{root}/b/student_config.py')


@pytest.mark.slow
def test_mmdet_default_tta_run(tmp_path):
    """mmdet: no tta_model / tta_pipeline in the config, mmdet's defaults
    (a warning each), and predictions dumped."""
    pytest.importorskip('mmdet')
    from mmdistill.testing.tiny import random_checkpoint
    root = str(tmp_path)
    config = write_tiny_config('retinanet', root, length=1, probe=False)
    cfg = Config.fromfile(config)
    assert 'tta_model' not in cfg and 'tta_pipeline' not in cfg
    student = random_checkpoint(cfg.model.student,
                                osp.join(root, 'student.pth'),
                                scope='mmdet', init=False)
    out = osp.join(root, 'pred.pkl')
    result = run_tool([sys.executable, TOOL, config, student, '--tta',
                       '--work-dir', f'{root}/w', '--out', out])
    assert ("--tta: no tta_model in the config; using mmdet's default"
            in result.stdout)
    assert 'coco/bbox_mAP' in _metrics(f'{root}/w')
    assert osp.isfile(out)
