"""tools/analysis/cost_table.py (README's cost table from benchmark JSON)
and tools/analysis/gpu_cost.sh (the prepared GPU run of that table)."""
import json
import os.path as osp
import re
import shlex
import subprocess

from tools_support import load_script

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
TOOLS = osp.join(ROOT, 'tools', 'analysis')


def load(name):
    return load_script(osp.join(TOOLS, f'{name}.py'), name)


def result(config, amp_dtype=None, teacher_dtype=None):
    return dict(
        config=config, amp=amp_dtype is not None, amp_dtype=amp_dtype,
        input_size=[512, 1024],
        student=dict(sec_per_iter=0.0405), distiller=dict(sec_per_iter=0.0662),
        teacher=dict(dtype=teacher_dtype, channels_last=False),
        parts=dict(student_step_sec=0.0405,
                   teacher_to_deepest_tap_sec=0.0201),
        distiller_over_floor=0.0662 / 0.0606, memory_ratio=1.554)


def test_rows_from_benchmark_results(tmp_path, capsys):
    paths = []
    for i, r in enumerate([
            result('configs/mlp/mlp_backbone_x.py'),
            result('configs/fgd/fgd_fpn_y.py', 'bfloat16', 'float16')]):
        paths.append(str(tmp_path / f'{i}.json'))
        with open(paths[-1], 'w') as f:
            json.dump(r, f)
    text = load('cost_table').main(paths)
    lines = text.splitlines()
    assert lines[0].startswith('| method | config | input | precision')
    assert lines[2] == ('| MLP | `mlp_backbone_x` | 512x1024 | fp32 | 40.5 '
                        '| 66.2 | 60.6 | 1.09 | 1.55x |')
    assert lines[3].startswith('| FGD | `fgd_fpn_y` | 512x1024 | '
                               'bf16 AMP, teacher fp16 |')
    assert capsys.readouterr().out.strip() == text


def test_gpu_script_rows_are_real_configs_and_options():
    """Every row of the prepared GPU run names a shipped config and options
    the benchmark accepts, so the script does not rot between the sessions
    that have a GPU."""
    script = osp.join(TOOLS, 'gpu_cost.sh')
    subprocess.run(['bash', '-n', script], check=True)
    text = open(script).read()
    rows = re.findall(r'^\s*\[(\w+)\]="([^"]+)"', text, re.M)
    order = re.search(r'^ORDER=\(([^)]*)\)', text, re.M).group(1).split()
    assert sorted(order) == sorted(name for name, _ in rows)
    bench = load('benchmark_overhead')
    for name, words in rows:
        words = shlex.split(words.replace('${SEG[*]}', '--size 512 1024')
                            .replace('${DET[*]}', '--size 800 1344'))
        assert osp.isfile(osp.join(ROOT, words[0])), (name, words[0])
        args = bench.parse_args(words + ['--device', 'cuda',
                                         '--random-teacher'])
        assert args.size, name
