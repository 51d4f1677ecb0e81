"""Which layers to distil, with which connector, loss and weight: candidate
taps of a student and a teacher, pairs matched by stride, and a distillation
config ready to train.

Both models are built from their configs with random weights (nothing is
downloaded: ``init_weights`` is not called and ``pretrained`` entries are
dropped) and run on one random batch of their task (detection, segmentation
or classification) in ``tensor`` mode with a forward hook on every module.
For each model the tool prints the candidate taps (backbone stages, neck /
FPN levels, head outputs) with output shape, stride (input size / output
size) and channels. It then proposes the pairs of ``--method`` by stride,
fills the connector channels, takes the loss and connector settings and
weights of the method's shipped config (``configs/<method>/``), and writes
(``--out``) or prints a config whose ``_base_`` is the student config and
whose teacher is the teacher config. ``--cfg-options`` and
``--teacher-cfg-options`` are written into it (the student's as config
values merged into the student config, the teacher's as
``model.teacher.cfg_options``), so it builds the models that were probed.
The shipped config cited is the one closest to the student (model names,
then crop and schedule). The teacher checkpoint is left for you to fill in
(``FILL ME``); the config also adds ``TeacherCheckHook``, which scores the
teacher on validation batches before the first iteration. A distillation
config given as STUDENT or TEACHER, a missing config file or an existing
``--out`` stop with one ``error:`` line and exit code 1.

Example::

    python tools/analysis/suggest_pairs.py \\
        mmdet::retinanet/retinanet_r18_fpn_1x_coco.py \\
        mmdet::retinanet/retinanet_r50_fpn_1x_coco.py \\
        --method mlp --out configs_local/mlp_retinanet_r50-r18.py
"""
import argparse
import json
import os
import os.path as osp
import sys

from mmengine.config import DictAction


def parse_args(argv=None):
    from mmdistill.analysis import METHODS
    parser = argparse.ArgumentParser(
        description='Candidate taps of a student and a teacher, pairs '
        'matched by stride, and a distillation config.')
    parser.add_argument('student', help='student config (file or '
                        'mmdet::/mmseg::/mmpretrain:: path)')
    parser.add_argument('teacher', help='teacher config (likewise)')
    parser.add_argument('--method', required=True, choices=METHODS,
                        help='distillation method')
    parser.add_argument('--out', default=None,
                        help='write the distillation config to this file '
                        '(default: print it)')
    parser.add_argument('--json', action='store_true',
                        help='print the candidates, pairs and config as '
                        'JSON instead of text')
    parser.add_argument('--size', type=int, nargs=2, default=None,
                        metavar=('H', 'W'),
                        help='dummy input size (default 256 256; 224 224 '
                        'for classifiers)')
    parser.add_argument('--force', action='store_true',
                        help='overwrite --out if it exists')
    parser.add_argument('--no-teacher-check', action='store_true',
                        help='leave TeacherCheckHook out of the config')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='overrides of the student config, key=value')
    parser.add_argument('--teacher-cfg-options', nargs='+',
                        action=DictAction,
                        help='overrides of the teacher config, key=value')
    return parser.parse_args(argv)


#: the README's fix for teacher / student preprocessing that differs
PREPROCESSING_FIX = (
    "set teacher=dict(..., data_preprocessor='own') in the written "
    "config's model (each batch is re-normalised the teacher's way), or "
    "make the student config's data_preprocessor match the teacher's")


def main(argv=None) -> dict:
    """Run the tool.

    Args:
        argv (list[str], optional): The command line (default
            ``sys.argv[1:]``).

    Returns:
        dict: What ``--json`` prints (``error`` when no pairs apply).

    Raises:
        FileExistsError: ``--out`` exists and ``--force`` is not given.
        FileNotFoundError: A config file does not exist.
        ProbeError: A config cannot be probed (a distillation config, an
            unknown task).
    """
    import mmdistill  # noqa: F401  registries
    from mmdistill.analysis import (SuggestError, format_candidates,
                                    format_suggestion, probe_model,
                                    render_config, suggest)
    from mmdistill.analysis.suggest import preprocessing_notes
    from mmdistill.utils.config import load_config
    args = parse_args(argv)
    if args.out and osp.exists(args.out) and not args.force:
        raise FileExistsError(
            f'{args.out} exists; give another --out or add --force.')
    student_cfg = load_config(args.student)
    teacher_cfg = load_config(args.teacher)
    if args.cfg_options:
        student_cfg.merge_from_dict(args.cfg_options)
    if args.teacher_cfg_options:
        teacher_cfg.merge_from_dict(args.teacher_cfg_options)
    student = probe_model(student_cfg, args.student, args.size,
                          role='student')
    teacher = probe_model(teacher_cfg, args.teacher, args.size,
                          role='teacher')
    result = dict(student=student.to_dict(), teacher=teacher.to_dict())
    text = [format_candidates(student, 'Student'), '',
            format_candidates(teacher, 'Teacher'), '']
    preprocessing = preprocessing_notes(student, teacher)
    if preprocessing:
        text.append(
            "Warning: the student's data preprocessor feeds the teacher, "
            'and they differ (' + '; '.join(preprocessing) + '): the teacher '
            f'sees inputs unlike in its training. Fix: {PREPROCESSING_FIX}.')
        text.append('')
    result['preprocessing'] = preprocessing
    try:
        suggestion = suggest(student, teacher, args.method)
    except SuggestError as err:
        result['error'] = str(err)
        text.append(f'No pairs proposed: {err}')
        _emit(args, result, text)
        return result
    config = render_config(suggestion, args.student, args.teacher,
                           student_cfg, args.out, student.input_shape,
                           teacher_check=not args.no_teacher_check,
                           student_options=args.cfg_options,
                           teacher_options=args.teacher_cfg_options)
    result.update(suggestion.to_dict())
    result['config'] = config
    text += [format_suggestion(suggestion), '']
    if args.out:
        folder = osp.dirname(osp.abspath(args.out))
        os.makedirs(folder, exist_ok=True)
        with open(args.out, 'w', encoding='utf-8') as f:
            f.write(config)
        result['out'] = args.out
        text.append(f'Config written to {args.out}. Before training, set '
                    'model.teacher.checkpoint (marked FILL ME) to the '
                    'weights trained with the teacher config.')
    else:
        text += ['Config (--out FILE writes it):', '', config]
    _emit(args, result, text)
    return result


def _emit(args, result: dict, text: list) -> None:
    if args.json:
        print(json.dumps(result, indent=1, default=str))
    else:
        print('\n'.join(text))


def run(argv=None) -> int:
    """The command line: :func:`main`, with a one-line ``error:`` message
    on stderr instead of a traceback for what the user gave wrong (an
    existing ``--out``, a missing config file, a config that cannot be
    probed).

    Returns:
        int: The exit code: 0, or 1 on an error or when no pairs apply.
    """
    from mmdistill.analysis.probe import ProbeError
    try:
        outcome = main(argv)
    except (FileExistsError, FileNotFoundError, ProbeError) as err:
        message = err.args[0] if len(err.args) == 1 else str(err)
        print('error: ' + ' '.join(str(message).split()), file=sys.stderr)
        return 1
    return 1 if 'error' in outcome else 0


if __name__ == '__main__':
    sys.exit(run())
