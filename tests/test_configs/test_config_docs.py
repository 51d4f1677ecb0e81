"""The shipped configs parse, and the model zoo describes exactly them: every
config has one row in its folder's README and one model in its folder's
metafile, every README row and metafile model names an existing config, and
model-index.yml imports every metafile (issue 4)."""
import glob
import os.path as osp
import re

import pytest
import yaml
from mmengine.config import Config

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
CONFIG_DIR = osp.join(ROOT, 'configs')
# configs/_base_/ holds fragments that configs inherit, not configs
CONFIGS = sorted(
    osp.relpath(p, ROOT)
    for p in glob.glob(osp.join(CONFIG_DIR, '**', '*.py'), recursive=True)
    if '_base_' not in osp.relpath(p, CONFIG_DIR).split(osp.sep))
FOLDERS = sorted({osp.dirname(c) for c in CONFIGS})
LINK = re.compile(r'\]\((?:\./)?([^()\s]+?\.py)\)')


def readme_rows(folder: str) -> list:
    """The config file names linked from the table rows of the README."""
    path = osp.join(ROOT, folder, 'README.md')
    assert osp.isfile(path), f'{folder} has no README.md'
    names = []
    with open(path) as f:
        for line in f:
            if line.lstrip().startswith('|'):
                names += LINK.findall(line)
    return names


def load_yaml(path: str):
    with open(path) as f:
        return yaml.safe_load(f)


def test_there_are_configs():
    assert len(CONFIGS) >= 20, CONFIGS


@pytest.mark.parametrize('config', CONFIGS)
def test_config_parses_as_a_distillation_config(config):
    cfg = Config.fromfile(osp.join(ROOT, config))
    assert cfg.model.type == 'mmdistill.SingleTeacherDistiller'
    assert cfg.model.student.type and cfg.model.distill
    assert set(cfg.model.teacher) >= {'config', 'checkpoint'}
    assert cfg.default_scope in ('mmdet', 'mmseg', 'mmpretrain')
    # mmdistill's hooks merged into the student's default_hooks
    assert cfg.default_hooks.student_checkpoint.type == \
        'mmdistill.StudentCheckpointHook'
    assert cfg.default_hooks.rng_state.type == 'mmdistill.RNGStateHook'
    assert {'checkpoint', 'logger'} <= set(cfg.default_hooks)
    assert not cfg.get('find_unused_parameters', False)


@pytest.mark.parametrize('folder', FOLDERS)
def test_every_config_has_one_readme_row_and_every_row_a_config(folder):
    rows = readme_rows(folder)
    configs = sorted(osp.basename(c) for c in CONFIGS
                     if osp.dirname(c) == folder)
    dangling = sorted(set(rows) - set(configs))
    undocumented = sorted(set(configs) - set(rows))
    assert not dangling, f'{folder}/README.md names missing configs ' \
        f'{dangling}'
    assert not undocumented, f'{folder}/README.md has no row for ' \
        f'{undocumented}'
    repeated = sorted({r for r in rows if rows.count(r) > 1})
    assert not repeated, f'{folder}/README.md lists {repeated} twice'


@pytest.mark.parametrize('folder', FOLDERS)
def test_every_config_has_one_metafile_model_and_every_model_a_config(
        folder):
    meta = load_yaml(osp.join(ROOT, folder, 'metafile.yml'))
    collections = {c['Name'] for c in meta['Collections']}
    for collection in meta['Collections']:
        assert osp.isfile(osp.join(ROOT, collection['README']))
    configs = sorted(c for c in CONFIGS if osp.dirname(c) == folder)
    listed = [m['Config'] for m in meta['Models']]
    assert sorted(listed) == configs
    for model in meta['Models']:
        assert model['In Collection'] in collections
        assert model['Name'] == osp.splitext(osp.basename(model['Config']))[0]
        cfg = Config.fromfile(osp.join(ROOT, model['Config']))
        assert model['Metadata']['Teacher']['Config'] == \
            cfg.model.teacher.config
        assert model['Metadata']['Teacher']['Weights'] == \
            cfg.model.teacher.checkpoint
        for result in model.get('Results', []):
            assert result['Metrics'] and result['Task'] and result['Dataset']


def test_model_index_imports_every_metafile():
    index = load_yaml(osp.join(ROOT, 'model-index.yml'))
    imports = index['Import']
    metafiles = sorted(
        osp.relpath(p, ROOT)
        for p in glob.glob(osp.join(CONFIG_DIR, '*', 'metafile.yml')))
    assert sorted(imports) == metafiles
    assert sorted(osp.dirname(m) for m in metafiles) == FOLDERS


def test_model_index_is_valid_for_openmmlab_tools():
    modelindex = pytest.importorskip('modelindex')
    index = modelindex.load(osp.join(ROOT, 'model-index.yml'))
    # README paths are relative to the repository root, as in mmdet's and
    # mmseg's metafiles (checked above); modelindex resolves them against
    # the metafile's folder, and reports the same for mmdet's own index
    errors = [e for e in index.check(silent=True)
              if 'Path to README file' not in e]
    assert errors == []
    # loading the root index merged every model with its collection
    for model in index.models:
        assert model.full_model.paper, model.name
    names = {m.name for m in index.models}
    assert names == {osp.splitext(osp.basename(c))[0] for c in CONFIGS}


def _released_weights(scoped_config: str) -> dict:
    """Config -> weights of the model-zoo metafile next to a ``mmdet::``,
    ``mmseg::`` or ``mmpretrain::`` config inside the installed package."""
    import importlib
    scope, rel = scoped_config.split('::', 1)
    package = importlib.import_module(scope)
    folder = osp.join(osp.dirname(package.__file__), '.mim', 'configs',
                      osp.dirname(rel))
    released = {}
    for name in ('metafile.yml', 'metafile.yaml'):
        if osp.isfile(osp.join(folder, name)):
            meta = load_yaml(osp.join(folder, name))
            for model in meta.get('Models', []):
                if 'Config' in model and 'Weights' in model:
                    released[osp.basename(model['Config'])] = \
                        model['Weights']
    return released


@pytest.mark.parametrize('config', CONFIGS)
def test_teacher_checkpoint_is_the_one_released_with_its_config(config):
    """The teacher is built from the very config its public checkpoint was
    released with, so its architecture and its own test-time settings match
    the weights."""
    teacher = Config.fromfile(osp.join(ROOT, config)).model.teacher
    released = _released_weights(teacher.config)
    name = osp.basename(teacher.config.split('::', 1)[1])
    assert name in released, f'{teacher.config} has no released weights'
    assert teacher.checkpoint == released[name]
    assert not teacher.get('cfg_options')
