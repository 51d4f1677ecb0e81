"""``import mmdistill`` checks the OpenMMLab stack against the supported
ranges, from package metadata, without importing the packages."""
import os.path as osp
import re
import subprocess
import sys

import pytest

from mmdistill.utils.version_guard import (SUPPORTED, IncompatibleVersionError,
                                           check_package, check_scope,
                                           check_versions, parse_version)

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))


def test_parse_version():
    assert parse_version('2.1.0') == (2, 1, 0)
    assert parse_version('2.13.0+cpu') == (2, 13, 0)
    assert parse_version('2.1.2+cu121') == (2, 1, 2)
    assert parse_version('1.0.0rc6') == (1, 0, 0)
    assert parse_version('0.10') == (0, 10, 0)


@pytest.mark.parametrize('dist,version,ok', [
    ('mmcv', '2.0.0', True), ('mmcv', '2.1.0', True), ('mmcv', '2.2.0', False),
    ('mmcv', '1.7.2', False), ('mmdet', '3.3.0', True),
    ('mmdet', '2.28.2', False), ('mmsegmentation', '1.2.2', True),
    ('mmsegmentation', '0.30.0', False), ('mmengine', '0.10.7', True),
    ('mmengine', '0.9.1', False), ('mmpretrain', '1.2.0', True),
    ('torch', '1.13.1', False), ('torch', '2.1.2+cu121', True)
])
def test_ranges(dist, version, ok):
    if ok:
        assert check_package(dist, version) == version
    else:
        with pytest.raises(IncompatibleVersionError) as err:
            check_package(dist, version)
        low, high = SUPPORTED[dist][1:]
        message = str(err.value)
        assert f'{dist}=={version} is installed' in message
        assert f'{dist}>={low},<{high}' in message


def test_missing_required_package_says_how_to_install(monkeypatch):
    from mmdistill.utils import version_guard
    monkeypatch.setattr(version_guard, 'installed_version', lambda d: None)
    with pytest.raises(IncompatibleVersionError, match='pip install "mmcv'):
        check_package('mmcv', required=True)
    assert check_package('mmdet') is None  # optional at import


def test_installed_stack_is_supported():
    versions = check_versions()
    assert versions['mmengine'] and versions['mmcv']
    check_scope('mmpretrain')


def _requirement_ranges():
    ranges = {}
    for name in ('mminstall.txt', 'cls.txt'):
        with open(osp.join(ROOT, 'requirements', name)) as f:
            for line in f:
                found = re.match(r'([\w-]+)>=([\d.]+),<([\d.]+)', line.strip())
                if found:
                    ranges[found.group(1)] = found.group(2, 3)
    return ranges


def test_guard_and_requirements_agree():
    ranges = _requirement_ranges()
    for dist, (low, high) in ranges.items():
        assert SUPPORTED[dist][1:] == (low, high), dist
    assert set(ranges) == set(SUPPORTED) - {'torch'}


def _import_mmdistill_with(fake: dict) -> subprocess.CompletedProcess:
    code = f"""
import importlib.metadata as m, sys
real = m.version
fake = {fake!r}
m.version = lambda name: fake.get(name) or real(name)
try:
    import mmdistill
except ImportError as err:
    print('ERROR', type(err).__name__, err)
print('heavy', sorted(k for k in ('mmdet', 'mmseg', 'mmcv', 'mmpretrain')
                      if k in sys.modules))
"""
    return subprocess.run([sys.executable, '-c', code], cwd=ROOT,
                          capture_output=True, text=True, check=True)


def test_import_stops_naming_the_package():
    out = _import_mmdistill_with({'mmdet': '3.4.1'}).stdout
    assert 'ERROR IncompatibleVersionError mmdet==3.4.1 is installed' in out
    assert 'mmdet>=3.0.0,<3.4.0' in out
    # the check itself imported none of the packages it checks
    assert "heavy []" in out


def test_import_of_a_supported_stack_loads_no_task_package():
    out = _import_mmdistill_with({}).stdout
    assert 'ERROR' not in out
    assert "'mmdet'" not in out and "'mmseg'" not in out, out


def test_installed_environment_satisfies_install_requires():
    """pip leaves an environment that satisfies every requirement as it is:
    the stack CI installs (both stacks) satisfies mmdistill's ranges, so
    `pip install -e .` into it changes nothing."""
    from importlib import metadata

    from packaging.requirements import Requirement
    requires = metadata.requires('mmdistill') or []
    checked = 0
    for line in requires:
        req = Requirement(line)
        if req.marker is not None and not req.marker.evaluate(
                {'extra': 'cls'}):
            continue
        version = metadata.version(req.name)
        assert req.specifier.contains(version, prereleases=True), (
            f'{req.name} {version} does not satisfy {req}')
        checked += 1
    assert checked >= 5
