"""Fixtures for the tests of tools/: a shrunken RetinaNet distillation
config on disk and one short single-process training run of it."""
import os.path as osp
import subprocess
import sys

import pytest

HERE = osp.dirname(osp.abspath(__file__))
if HERE not in sys.path:  # tools_support, also imported by the tool runs
    sys.path.insert(0, HERE)

from tools_support import ROOT, tool_env, write_tiny_config  # noqa: E402


def run_tool(args, env=None, timeout=600, check=True, cwd=None):
    """Run ``args`` (a tool command line); return the CompletedProcess.
    A failure shows the tool's output."""
    result = subprocess.run(
        args,
        cwd=cwd or ROOT,
        env=env or tool_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=timeout)
    if check and result.returncode != 0:
        pytest.fail(f'{" ".join(map(str, args))} exited with '
                    f'{result.returncode}:\n{result.stdout[-6000:]}')
    return result


@pytest.fixture(scope='session')
def trained(tmp_path_factory):
    """tools/train.py, one process, one epoch (2 iterations) of the tiny
    RetinaNet distillation: the config path and its work dir."""
    root = str(tmp_path_factory.mktemp('trained'))
    config = write_tiny_config('retinanet', root, length=1, probe=False)
    work_dir = osp.join(root, 'work')
    run_tool([
        sys.executable, 'tools/train.py', config, '--work-dir', work_dir
    ])
    return dict(config=config, work_dir=work_dir, root=root)
