"""Turn ``benchmark_overhead.py --out`` JSON files into README's cost table.

Each file is one row: method, config, input, precision, the student's and
the distiller's time per step, the floor (student step + teacher to its
deepest tap), distiller / floor, and peak memory against the student.

Example::

    python tools/analysis/cost_table.py work_dirs/cost/*.json
"""
import argparse
import json
import os.path as osp
import sys
from typing import List


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description='Markdown cost table from benchmark_overhead.py JSON '
        'files (one row per file).')
    parser.add_argument('results', nargs='+', help='JSON files')
    return parser.parse_args(argv)


def precision(result: dict) -> str:
    """``fp32``, ``bf16 AMP``..., plus the teacher's options."""
    short = dict(float16='fp16', bfloat16='bf16', float32='fp32')
    parts = [f'{short[result["amp_dtype"]]} AMP' if result['amp'] else 'fp32']
    teacher = result.get('teacher', {})
    if teacher.get('dtype'):
        parts.append(f'teacher {short[teacher["dtype"]]}')
    if teacher.get('channels_last'):
        parts.append('teacher channels_last')
    return ', '.join(parts)


def row(result: dict) -> str:
    """One markdown row of a benchmark result."""
    name = osp.splitext(osp.basename(result['config']))[0]
    method = name.split('_')[0].upper()
    parts = result['parts']
    floor = parts['student_step_sec'] + parts['teacher_to_deepest_tap_sec']
    h, w = result['input_size']
    cells = [
        method, f'`{name}`', f'{h}x{w}',
        precision(result), f'{result["student"]["sec_per_iter"] * 1e3:.1f}',
        f'{result["distiller"]["sec_per_iter"] * 1e3:.1f}',
        f'{floor * 1e3:.1f}', f'{result["distiller_over_floor"]:.2f}',
        f'{result["memory_ratio"]:.2f}x'
    ]
    return '| ' + ' | '.join(cells) + ' |'


HEADER = ('| method | config | input | precision | student ms | '
          'distiller ms | floor ms | distiller / floor | memory vs student |\n'
          '| --- | --- | --- | --- | --- | --- | --- | --- | --- |')


def table(results: List[dict]) -> str:
    """The header and one row per result, in the given order."""
    return '\n'.join([HEADER] + [row(r) for r in results])


def main(argv=None) -> str:
    args = parse_args(argv)
    results = []
    for path in args.results:
        with open(path) as f:
            results.append(json.load(f))
    text = table(results)
    print(text)
    return text


if __name__ == '__main__':
    sys.exit(0 if main() else 1)
