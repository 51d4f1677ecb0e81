"""tools/test.py --show/--show-dir do what each codebase's own tools/test.py
does (mmdet: under work_dir/<timestamp>/; mmseg: the visualizer's save_dir,
only every ``interval``-th batch; mmpretrain: the hook's out_dir, every
--interval-th image), and say so in the help; a config without a
visualization hook is told the hook of its own codebase."""
import argparse
import importlib.util
import os
import os.path as osp
import re
import sys

import pytest
from mmengine.config import Config

from conftest import run_tool
from tools_support import DEMO_DISTILL as DISTILL
from tools_support import ROOT, load_script, tiny_student_weights

TOOL = osp.join(ROOT, 'tools', 'test.py')
HOOKS = dict(mmdet='DetVisualizationHook', mmseg='SegVisualizationHook',
             mmpretrain='VisualizationHook')


@pytest.fixture(scope='module')
def tool():
    return load_script(TOOL, 'mmdistill_tools_test')


def setup(tool, scope, *options, work_dir='W'):
    return tool.setup_cfg(tool.parse_args(
        [DISTILL[scope], 'x.pth', '--work-dir', work_dir, *options]))


def student_of(scope) -> Config:
    from mmdistill.utils.config import student_config
    return student_config(Config.fromfile(DISTILL[scope]))


def own_tool_function(package: str):
    """``trigger_visualization_hook`` of ``package``'s own tools/test.py,
    as installed with it (mmdet keeps it in mmdet.engine.hooks.utils)."""
    if package == 'mmdet':
        from mmdet.engine.hooks.utils import trigger_visualization_hook
        return trigger_visualization_hook
    spec = importlib.util.find_spec(package)
    path = osp.join(spec.submodule_search_locations[0], '.mim', 'tools',
                    'test.py')
    if not osp.exists(path):
        pytest.skip(f'{package} is installed without its tools')
    return load_script(path, f'{package}_own_test').trigger_visualization_hook


def test_help_says_where_each_codebase_saves(tool, capsys):
    with pytest.raises(SystemExit):
        tool.parse_args(['--help'])
    text = ' '.join(capsys.readouterr().out.split())
    # was: "(under work_dir/<timestamp>/ when relative, as mmdet does)"
    assert ('mmdet configs: into work_dir/<timestamp>/DIR (DIR itself when '
            'absolute), every test image') in text
    assert ("mmseg configs: DIR is the visualizer's save_dir, relative to "
            'the current directory; the images go to DIR/vis_data/vis_image/'
            in text)
    assert ('N = default_hooks.visualization.interval (50 in mmseg\'s '
            'configs: none for fewer than 50 batches; --cfg-options '
            'default_hooks.visualization.interval=1 draws every batch)'
            in text)
    assert ('mmpretrain configs: into DIR, relative to the current '
            'directory, every --interval-th test image') in text


@pytest.mark.parametrize('scope', ['mmdet', 'mmseg'])
def test_same_settings_as_the_codebases_own_test_py(tool, scope, caplog):
    pytest.importorskip(scope)
    ours = setup(tool, scope, '--show-dir', 'vis')
    theirs = own_tool_function(scope)(
        student_of(scope),
        argparse.Namespace(show=False, show_dir='vis', wait_time=2))
    assert ours.default_hooks.visualization == (
        theirs.default_hooks.visualization)
    assert ours.visualizer == theirs.visualizer
    if scope == 'mmdet':
        assert ours.default_hooks.visualization.test_out_dir == 'vis'
        assert 'save_dir' not in ours.visualizer
    else:
        assert ours.visualizer.save_dir == 'vis'
        assert 'interval' not in ours.default_hooks.visualization


def test_mmpretrain_as_its_test_py(tool):
    """mmpretrain's test.py sets enable, out_dir and interval (its
    --interval, default 1: its hook's own default is 5000)."""
    pytest.importorskip('mmpretrain')
    hook = setup(tool, 'mmpretrain', '--show-dir',
                 'vis').default_hooks.visualization
    assert hook.enable is True and hook.out_dir == 'vis'
    assert hook.interval == 1
    hook = setup(tool, 'mmpretrain', '--show-dir', 'vis', '--interval',
                 '3').default_hooks.visualization
    assert hook.interval == 3


@pytest.mark.parametrize('scope', ['mmdet', 'mmseg'])
def test_interval_is_mmpretrains_option(tool, scope):
    pytest.importorskip(scope)
    with pytest.raises(SystemExit) as exc:
        setup(tool, scope, '--show-dir', 'vis', '--interval', '2')
    message = exc.value.code
    assert message.startswith("error: --interval is mmpretrain's option")
    assert ('default_hooks.visualization.interval=N' in message) == (
        scope == 'mmseg')


@pytest.mark.parametrize('argv,problem', [
    (['--interval', '2'], 'give one of them too'),
    (['--show-dir', 'vis', '--interval', '0'], 'must be at least 1'),
])
def test_interval_needs_show_and_a_positive_value(tool, capsys, argv,
                                                  problem):
    """It was dropped without --show/--show-dir."""
    with pytest.raises(SystemExit):
        tool.parse_args(['c.py', 'x.pth', *argv])
    assert problem in capsys.readouterr().err


@pytest.mark.parametrize('scope', ['mmdet', 'mmseg', 'mmpretrain', 'mmfoo'])
def test_no_visualization_hook_names_the_codebases_hook(tool, scope):
    """It suggested DetVisualizationHook whatever the task."""
    cfg = Config(dict(default_scope=scope, default_hooks=dict(),
                      work_dir='W'))
    args = tool.parse_args(['c.py', 'x.pth', '--show-dir', 'vis'])
    with pytest.raises(SystemExit) as exc:
        tool.enable_visualization(cfg, args)
    message = exc.value.code
    assert f"the config (default_scope {scope!r}) has none" in message
    if scope in HOOKS:
        assert message.endswith(
            f'--cfg-options default_hooks.visualization.type={HOOKS[scope]}.')
        assert len(re.findall(r'\w*VisualizationHook', message)) == 1
    else:
        assert ('the hook of its codebase (DetVisualizationHook for mmdet, '
                'SegVisualizationHook for mmseg, VisualizationHook for '
                'mmpretrain)') in message


@pytest.mark.slow
def test_mmseg_paints_where_mmseg_does(tmp_path):
    """The reviewer's run: a relative --show-dir of an mmseg config is
    relative to the current directory (DIR/vis_data/), and mmseg's hook
    draws batches 50, 100, ... only: none of 4; with interval=1, all."""
    pytest.importorskip('mmseg')
    config, cfg, checkpoint = tiny_student_weights('pspnet', str(tmp_path))
    cwd = tmp_path / 'cwd'
    cwd.mkdir()
    command = [sys.executable, TOOL, config, checkpoint, '--work-dir',
               str(tmp_path / 'W'), '--cfg-options',
               'default_hooks.visualization.type=SegVisualizationHook']
    result = run_tool(command[:4] + ['--show-dir', 'vis'] + command[4:],
                      cwd=str(cwd))
    assert ('the painted predictions go to vis/vis_data/vis_image, test '
            'batches 50, 100, ... only') in result.stdout
    assert osp.isfile(cwd / 'vis' / 'vis_data' / 'config.py')
    assert not osp.exists(cwd / 'vis' / 'vis_data' / 'vis_image')
    assert not osp.exists(tmp_path / 'W' / 'vis')

    result = run_tool(
        command[:4] + ['--show-dir', 'vis1'] + command[4:] +
        ['default_hooks.visualization.interval=1'], cwd=str(cwd))
    assert ('the painted predictions go to vis1/vis_data/vis_image, every '
            'test batch.') in result.stdout
    images = os.listdir(cwd / 'vis1' / 'vis_data' / 'vis_image')
    assert len(images) == cfg.test_dataloader.batch_size * 4, images
