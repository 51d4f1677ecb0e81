"""The layout of configs/ that configs/README.md describes: one naming
scheme, every config built from its distiller base in configs/_base_/
(student config + teacher + runtime) or from another config of its folder,
mmdistill's hooks written once (into default_hooks), the fragment variables
``teacher``/``distill`` equal to what the distiller gets, no unused
fragment, and papers cited by name (issue 13)."""
import ast
import glob
import os.path as osp
import re

import pytest
from mmengine.config import Config

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
CONFIG_DIR = osp.join(ROOT, 'configs')
BASE_DIR = osp.join(CONFIG_DIR, '_base_')
RUNTIME = osp.join(BASE_DIR, 'distill_runtime.py')
ALL_PY = sorted(
    glob.glob(osp.join(CONFIG_DIR, '**', '*.py'), recursive=True))
FRAGMENTS = [p for p in ALL_PY if p.startswith(BASE_DIR + osp.sep)]
CONFIGS = [osp.relpath(p, ROOT) for p in ALL_PY if p not in FRAGMENTS]
# folder -> the method names its configs may start with
FOLDER_METHODS = {'angular': {'lad', 'cad'},
                  'vit_attention': {'vit-attention'}}
FIELD = re.compile(r'^[a-z0-9]+(-[a-z0-9.]+)*$')


def fields(path: str) -> list:
    return osp.splitext(osp.basename(path))[0].split('_')


def assignments(path: str) -> dict:
    """Top-level ``name = value`` nodes of a config file."""
    with open(path) as f:
        tree = ast.parse(f.read())
    found = {}
    for node in tree.body:
        if isinstance(node, ast.Assign):
            for target in node.targets:
                if isinstance(target, ast.Name):
                    found[target.id] = node.value
    return found


def bases(path: str) -> list:
    """The ``_base_`` entries of a config file, local ones as absolute
    paths, scoped ones (``mmseg::...``) as written."""
    node = assignments(path).get('_base_')
    if node is None:
        return []
    value = ast.literal_eval(node)
    entries = [value] if isinstance(value, str) else list(value)
    return [
        e if '::' in e else osp.normpath(osp.join(osp.dirname(path), e))
        for e in entries
    ]


def reachable(path: str) -> set:
    seen, todo = set(), [path]
    while todo:
        current = todo.pop()
        for base in bases(current):
            if '::' not in base and base not in seen:
                seen.add(base)
                todo.append(base)
    return seen


@pytest.mark.parametrize('config', CONFIGS)
def test_config_name_follows_the_scheme(config):
    """<method>_<where>_<teacher>_<student>_<schedule>_<dataset>.py, the
    method one of its folder's."""
    parts = fields(config)
    assert len(parts) == 6, (
        f'{config}: {len(parts)} fields, not 6 '
        '(<method>_<where>_<teacher>_<student>_<schedule>_<dataset>)')
    bad = [p for p in parts if not FIELD.match(p)]
    assert not bad, f'{config}: fields {bad} are not lower-case words ' \
        'joined by -'
    folder = osp.basename(osp.dirname(config))
    assert parts[0] in FOLDER_METHODS.get(folder, {folder}), config


@pytest.mark.parametrize('config', CONFIGS)
def test_config_inherits_its_distiller_base_or_a_config_of_its_folder(
        config):
    path = osp.join(ROOT, config)
    own = bases(path)
    assert own, f'{config} inherits nothing'
    assert not [b for b in own if '::' in b], (
        f'{config} inherits a student config directly; it comes with its '
        'distiller base in configs/_base_/distillers/')
    distiller = osp.join(BASE_DIR, 'distillers',
                         '_'.join(fields(config)[2:]) + '.py')
    variant_of = [
        b for b in own if osp.dirname(b) == osp.dirname(path)
        and not b.startswith(BASE_DIR + osp.sep)
    ]
    if variant_of:
        assert len(variant_of) == 1, config
    else:
        assert distiller in own, (
            f'{config} should inherit {osp.relpath(distiller, ROOT)}')
    others = set(own) - {distiller, *variant_of}
    allowed = (osp.join(BASE_DIR, 'distill'), osp.join(BASE_DIR, 'teachers'))
    assert all(osp.dirname(o) in allowed for o in others), (config, others)
    # the name's teacher and student are those of the distiller base it
    # comes from (through a variant too)
    roots = [
        b for b in reachable(path)
        if osp.dirname(b) == osp.join(BASE_DIR, 'distillers')
    ]
    assert len(roots) == 1, (config, roots)
    assert fields(roots[0])[:2] == fields(config)[2:4], (config, roots[0])


@pytest.mark.parametrize(
    'base', sorted(glob.glob(osp.join(BASE_DIR, 'distillers', '*.py'))))
def test_distiller_base_is_student_teacher_and_runtime(base):
    parts = fields(base)
    assert len(parts) == 4, base
    own = bases(base)
    assert len(own) == 3 and '::' in own[0], (
        f'{base}: [student config, teacher, runtime] expected, got {own}')
    teacher, runtime = own[1], own[2]
    assert runtime == RUNTIME
    assert osp.dirname(teacher) == osp.join(BASE_DIR, 'teachers')
    assert fields(teacher)[0] == parts[0], (base, teacher)


def test_mmdistill_hooks_are_written_once_and_merged_into_default_hooks():
    """Only _base_/distill_runtime.py names mmdistill's hooks; each
    distiller base merges them into the student's default_hooks (a dict, so
    the student's own custom_hooks and custom_imports stay: RTMDet's and
    YOLOX's recipes carry EMAHook there); no config writes custom_imports;
    a config may extend the student's hooks with
    ``[*_base_.get('custom_hooks', []), ...]``."""
    for path in ALL_PY:
        if path == RUNTIME:
            continue
        found = assignments(path)
        assert 'custom_imports' not in found, path
        assert 'distill_hooks' not in found, path
        hooks = found.get('custom_hooks')
        if hooks is not None:
            assert (isinstance(hooks, ast.List) and hooks.elts
                    and isinstance(hooks.elts[0], ast.Starred)), (
                        f'{path} replaces custom_hooks; extend them with '
                        "[*_base_.get('custom_hooks', []), ...]")
        if osp.dirname(path) == osp.join(BASE_DIR, 'distillers'):
            assert ast.unparse(found['default_hooks']) == \
                '{{_base_.distill_hooks}}', path
    assert set(assignments(RUNTIME)) == {'distill_hooks'}
    runtime = Config.fromfile(RUNTIME)
    assert {k: h.type for k, h in runtime.distill_hooks.items()} == dict(
        student_checkpoint='mmdistill.StudentCheckpointHook',
        rng_state='mmdistill.RNGStateHook')


@pytest.mark.parametrize('config', CONFIGS)
def test_fragment_variables_equal_the_distillers_and_runtime_is_there(
        config):
    cfg = Config.fromfile(osp.join(ROOT, config))
    for name in ('teacher', 'distill'):
        if name in cfg:
            assert cfg[name] == cfg.model[name], (
                f'{config}: the top-level `{name}` is not model.{name}; a '
                f'config that changes it sets both (see configs/README.md)')
    runtime = Config.fromfile(RUNTIME)
    assert cfg.distill_hooks == runtime.distill_hooks
    for key, hook in runtime.distill_hooks.items():
        assert cfg.default_hooks[key] == hook, (config, key)


def test_every_fragment_is_used():
    used = set()
    for config in CONFIGS:
        used |= reachable(osp.join(ROOT, config))
    unused = sorted(osp.relpath(f, ROOT) for f in FRAGMENTS if f not in used)
    assert not unused, f'fragments no config inherits: {unused}'


def test_configs_cite_papers_by_name():
    """No pointer outside the repository (a paper by its number, the folder
    of source papers, the spec file) in configs/ and model-index.yml; the
    pattern is spelled so that this file does not match it."""
    pattern = re.compile(r'shared[/]|SPEC[.]md|paper\s+0\d\d', re.IGNORECASE)
    files = glob.glob(osp.join(CONFIG_DIR, '**', '*'), recursive=True)
    files.append(osp.join(ROOT, 'model-index.yml'))
    hits = []
    for path in sorted(files):
        if not osp.isfile(path):
            continue
        with open(path) as f:
            for number, line in enumerate(f, 1):
                if pattern.search(line):
                    hits.append(f'{osp.relpath(path, ROOT)}:{number}')
    assert not hits, hits
