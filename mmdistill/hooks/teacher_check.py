"""Check the teacher on validation batches before training starts."""
import copy
import logging
import math
import re
from typing import Dict, List, Optional, Sequence, Tuple

import torch
from mmengine.dist import (all_gather_object, all_reduce,
                           broadcast_object_list)
from mmengine.hooks import Hook
from mmengine.logging import print_log

from mmdistill.registry import HOOKS
from .utils import distiller_of
from .rng_state import get_rng_state, set_rng_state

#: the evaluator keys judged by default, in order of preference (the last
#: part of the key: ``coco/bbox_mAP`` -> ``bbox_mAP``)
MAIN_METRICS = ('bbox_mAP', 'segm_mAP', 'mAP', 'mIoU', 'top1')
#: a detector whose mAP (0-1) stays below this is no better than random
#: weights, which score about 0
DETECTION_CHANCE = 0.01


class TeacherCheckError(RuntimeError):
    """The teacher failed :class:`TeacherCheckHook`'s check, or the
    student's evaluator could not score it."""


def _last(key: str) -> str:
    return key.rsplit('/', 1)[-1]


def main_metric(metrics: Dict[str, object],
                wanted: Optional[str] = None) -> str:
    """The key of ``metrics`` that :class:`TeacherCheckHook` judges.

    Args:
        metrics (dict): What the evaluator returned.
        wanted (str, optional): A key given by the user (the full key, e.g.
            ``'coco/bbox_mAP'``, or its last part, ``'bbox_mAP'``).

    Returns:
        str: The full key.

    Raises:
        ValueError: ``wanted`` is not there, or no known metric is.
    """
    numeric = [k for k, v in metrics.items() if _is_number(v)]
    if wanted is not None:
        for key in numeric:
            if key == wanted or _last(key) == wanted:
                return key
        raise ValueError(
            f'TeacherCheckHook: metric={wanted!r} is not among the '
            f"evaluator's results {numeric}; set metric to one of them.")
    for name in MAIN_METRICS:
        for key in numeric:
            if _last(key) == name:
                return key
    raise ValueError(
        'TeacherCheckHook cannot tell which of the evaluator\'s results '
        f'{numeric} is the score (it knows {list(MAIN_METRICS)}): set '
        "dict(type='mmdistill.TeacherCheckHook', metric=<one of them>, "
        'min_score=...).')


def _error_text(error: BaseException) -> str:
    return f'{type(error).__name__}: {error}'


def _is_number(value) -> bool:
    try:
        return math.isfinite(float(value)) and not isinstance(value, str)
    except (TypeError, ValueError):
        return False


def chance_level(key: str, num_classes: Optional[int],
                 num_samples: int,
                 constant_miou: Optional[float] = None
                 ) -> Optional[Tuple[float, str]]:
    """The score at or below which a model is no better than chance.

    * ``*mAP*`` (mmdet, 0-1): random weights score about 0; below
      :data:`DETECTION_CHANCE` counts as chance.
    * ``mIoU`` (mmseg, percent): ``100 / num_classes``, or what predicting
      the most frequent class everywhere scores on the same images
      (``constant_miou``), whichever is higher.
    * ``topK`` accuracy (mmpretrain, percent): ``100 * K / num_classes``
      plus three standard deviations of that rate on ``num_samples``
      samples (a random classifier's count is binomial).

    Args:
        key (str): The metric's key.
        num_classes (int, optional): Classes of the dataset.
        num_samples (int): Images evaluated.
        constant_miou (float, optional): mIoU (percent) of the best constant
            prediction on the evaluated images.

    Returns:
        tuple | None: (threshold, how it was defined), or None when the
        metric has no chance level defined here.
    """
    name = _last(key)
    if 'mAP' in name:
        return DETECTION_CHANCE, (
            f'a detector with random weights scores about 0; below '
            f'{DETECTION_CHANCE} counts as chance')
    if name == 'mIoU':
        candidates = []
        if num_classes:
            candidates.append((100.0 / num_classes,
                               f'100 / {num_classes} classes'))
        if constant_miou is not None:
            candidates.append((constant_miou,
                               'predicting the most frequent class '
                               'everywhere on the same images'))
        if not candidates:
            return None
        value, how = max(candidates)
        return value, f'{value:.2f} = {how}'
    match = re.fullmatch(r'top(\d+)', name)
    if match and num_classes:
        k = int(match.group(1))
        p = min(1.0, k / num_classes)
        margin = 3 * math.sqrt(p * (1 - p) / max(num_samples, 1))
        value = 100 * min(1.0, p + margin)
        return value, (f'{value:.2f} = {100 * p:.2f} (top-{k} of '
                       f'{num_classes} classes at random) + 3 standard '
                       f'deviations on {num_samples} images')
    return None


def teacher_class_counts(model: torch.nn.Module) -> List[int]:
    """The distinct ``num_classes`` (positive ints) of ``model``'s modules,
    sorted: e.g. ``[1, 80]`` for a two-stage detector (its RPN head
    predicts one class-agnostic "object" class), ``[19]`` for a PSPNet
    with its auxiliary head. Empty for an open-vocabulary detector (one
    with a ``language_model``: its ``num_classes`` is a text length, and
    it predicts the classes it is prompted with)."""
    if any(hasattr(m, 'language_model') for m in model.modules()):
        return []
    return sorted({
        m.num_classes for m in model.modules()
        if isinstance(getattr(m, 'num_classes', None), int)
        and not isinstance(m.num_classes, bool) and m.num_classes > 0
    })


def class_mismatch(counts: Sequence[int],
                   num_classes: Optional[int]) -> Optional[int]:
    """The number of classes the teacher predicts when it surely differs
    from the dataset's ``num_classes``, else None.

    ``counts`` are the teacher's :func:`teacher_class_counts`. Counts of 1
    are left out: class-agnostic heads (the RPN of a two-stage detector; an
    RPN alone is scored class-agnostically). The teacher matches when the
    dataset's count is among the rest, and differs when the rest is one
    count; with no dataset count, no other count, or several (e.g. a
    panoptic model's thing and stuff heads) it cannot be told: None.
    """
    predicting = {c for c in counts if c > 1}
    if (not num_classes or num_classes in predicting
            or len(predicting) != 1):
        return None
    return predicting.pop()


def _best_constant_miou(results: Sequence) -> Optional[float]:
    """mIoU (percent) of predicting one class everywhere, the best class,
    from mmseg ``IoUMetric`` results (per image: intersection, union,
    predicted and label areas per class)."""
    try:
        label = sum(torch.as_tensor(r[3], dtype=torch.float64)
                    for r in results)
    except (TypeError, IndexError):
        return None
    total = float(label.sum())
    present = int((label > 0).sum())
    if total <= 0 or present == 0:
        return None
    # class c everywhere: IoU_c = area_c / total, every other present class
    # 0, absent classes NaN (left out of mmseg's nanmean)
    return 100.0 * float(label.max()) / total / present


@HOOKS.register_module()
class TeacherCheckHook(Hook):
    """Before the first training iteration, score the teacher on validation
    batches and stop when it does not work.

    The teacher (``runner.model.teacher``, after its checkpoint is loaded)
    predicts ``num_batches`` batches of the validation dataloader, fed as
    the distiller feeds it: through the student's data preprocessor. A fresh
    evaluator built from ``cfg.val_evaluator`` scores them (the validation
    loop's own evaluator is left untouched), and the numbers are logged as
    ``teacher/<metric>`` (log, message hub, visualiser backends). Training
    stops with :class:`TeacherCheckError`, listing the usual causes, when
    the score is below ``min_score`` or at chance level (see
    :func:`chance_level`: mmdet mAP about 0, mmseg mIoU no better than
    ``100 / num_classes`` or one class everywhere, mmpretrain accuracy no
    better than random guessing).

    When the teacher predicts another number of classes than the dataset
    has (see :func:`class_mismatch`: e.g. a COCO-80 teacher distilled on
    the backbone/FPN features of a student with 3 classes), the student's
    evaluator cannot score its predictions: the hook logs why, does not
    score the teacher and lets training start (the features the student is
    distilled on do not depend on the classes); the ``teacher.dtype`` check
    below still runs. Every rank takes the main process's decision. When
    the evaluator raises for another reason, the hook stops with a
    :class:`TeacherCheckError` that names the likely cause, chained to the
    evaluator's error.

    Works with the evaluators of mmdet (``CocoMetric``: the COCO evaluation
    is restricted to the images scored), mmseg (``IoUMetric``) and
    mmpretrain (``Accuracy``), and with any other evaluator when ``metric``
    names the key to judge. In a distributed run every rank scores its own
    ``num_batches`` batches; the evaluator gathers them, so all ranks see
    the same numbers and take the same decision. The random generators are
    restored afterwards, so the training run is the same with and without
    the hook. The check runs at every start, a resumed run's included (the
    teacher is rebuilt from its checkpoint each time); it costs
    ``num_batches`` teacher predictions.

    The score is that of the float32 teacher. With ``teacher.dtype``
    (``'bfloat16'``/``'float16'``, how the teacher runs in training), the
    hook also runs the teacher to its taps on the first batch in that
    dtype and in float32, logs how far the tapped features are apart
    (a warning above 10%), and stops when they hold inf or NaN in the half
    dtype only (float16 overflowing), naming the taps and the fix.

    Example::

        custom_hooks = [
            dict(type='mmdistill.TeacherCheckHook', num_batches=10,
                 min_score=0.3),  # e.g. COCO bbox mAP
        ]

    Args:
        num_batches (int): Validation batches per rank. Defaults to 10.
        min_score (float, optional): Stop below this score, in the metric's
            own units (mmdet COCO mAP 0-1; mmseg mIoU and mmpretrain
            accuracy in percent). Defaults to None (only the chance check).
        metric (str, optional): The evaluator key to judge (``'coco/
            bbox_mAP'`` or ``'bbox_mAP'``). Defaults to the first of
            :data:`MAIN_METRICS` the evaluator returns.
        check_chance (bool): Stop at chance level. Defaults to True.
    """
    priority = 'VERY_HIGH'

    def __init__(self, num_batches: int = 10,
                 min_score: Optional[float] = None,
                 metric: Optional[str] = None,
                 check_chance: bool = True) -> None:
        if not isinstance(num_batches, int) or num_batches < 1:
            raise ValueError(
                f'TeacherCheckHook: num_batches must be an int >= 1, got '
                f'{num_batches!r}.')
        if min_score is not None and not _is_number(min_score):
            raise ValueError(
                f'TeacherCheckHook: min_score must be a number, got '
                f'{min_score!r}.')
        self.num_batches = num_batches
        self.min_score = None if min_score is None else float(min_score)
        self.metric = metric
        self.check_chance = check_chance
        #: the teacher's metrics of the last check
        self.metrics: Dict[str, object] = {}
        #: with a half ``teacher.dtype``: tap -> (relative difference from
        #: float32, all finite) on the first batch of the last check
        self.precision: Dict[str, Tuple[float, bool]] = {}
        #: why the last check did not score the teacher (the teacher and
        #: the dataset have different classes), else None
        self.skipped: Optional[str] = None
        self._num_classes: Optional[int] = None

    # ------------------------------------------------------------ pieces
    @staticmethod
    def _dataloader(runner):
        if getattr(runner, '_val_loop', None) is not None:
            return runner.val_loop.dataloader
        loader = runner.cfg.get('val_dataloader') if runner.cfg else None
        if loader is None:
            raise ValueError(
                'TeacherCheckHook scores the teacher on the validation data, '
                'but the config has no val_dataloader/val_cfg/val_evaluator: '
                'add them (the student config normally has them; '
                'tools/train.py --no-validate removes them: drop that flag), '
                'or remove the hook from custom_hooks.')
        return runner.build_dataloader(copy.deepcopy(loader))

    @staticmethod
    def _evaluator(runner):
        cfg = runner.cfg.get('val_evaluator') if runner.cfg else None
        if cfg is None:
            cfg = getattr(runner, '_val_evaluator', None)
        if cfg is None:
            raise ValueError(
                'TeacherCheckHook needs val_evaluator in the config to score '
                'the teacher; add it (the student config normally has it; '
                'tools/train.py --no-validate removes it: drop that flag), '
                'or remove the hook from custom_hooks.')
        return runner.build_evaluator(copy.deepcopy(cfg))

    @staticmethod
    def _watch_metrics(evaluator, raised: list) -> dict:
        """Wrap what the metrics compute from the gathered results: restrict
        mmdet's COCO evaluation to the images scored (it evaluates every
        image of the annotation file otherwise) and note mmseg's
        best-constant mIoU. An error there is noted (its text) and kept in
        ``raised`` instead of raised: the metrics are computed on the main
        process only, and the others wait for them in a broadcast, so the
        main process must reach it. Returns the dict the notes go to."""
        notes = {}
        for metric in evaluator.metrics:
            compute = metric.compute_metrics
            coco = hasattr(metric, '_coco_api') and hasattr(metric, 'img_ids')
            seg = type(metric).__name__ == 'IoUMetric'

            def wrapped(results, compute=compute, metric=metric, coco=coco,
                        seg=seg):
                try:
                    if coco and results and isinstance(results[0], tuple):
                        metric.img_ids = sorted(
                            {gt['img_id'] for gt, _ in results})
                        if not any(len(pred['bboxes'])
                                   for _, pred in results):
                            # CocoMetric returns no numbers at all then
                            notes['no_detections'] = '/'.join(
                                p for p in (metric.prefix, 'bbox_mAP') if p)
                    if seg:
                        notes['constant_miou'] = _best_constant_miou(results)
                    return compute(results)
                except Exception as error:
                    notes.setdefault('error', _error_text(error))
                    raised.append(error)
                    return {}

            metric.compute_metrics = wrapped
        return notes

    def _skip_reason(self, teacher) -> Optional[str]:
        """Why the teacher cannot be scored with the student's evaluator
        (its classes differ from the dataset's), the main process's answer
        on every rank; None when it can be (or the counts cannot be
        told)."""
        predicted = class_mismatch(teacher_class_counts(teacher),
                                   self._num_classes)
        reason = None
        if predicted is not None:
            reason = (
                f'the teacher predicts {predicted} classes and the dataset '
                f"has {self._num_classes}, so the student's val_evaluator "
                'cannot score its predictions (the features the student is '
                'distilled on do not depend on the classes)')
        shared = [reason]
        broadcast_object_list(shared)  # a no-op outside a distributed run
        return shared[0]

    def _scoring_failed(self, distiller, evaluator,
                        error: str) -> TeacherCheckError:
        """The error to raise when the evaluator raised ``error`` (its
        text, ``'<type>: <message>'``)."""
        names = ', '.join(type(m).__name__ for m in evaluator.metrics)
        return TeacherCheckError(
            f"TeacherCheckHook could not score the teacher: the student's "
            f'val_evaluator ({names}) raised {error}. Likely cause: the '
            "teacher predicts what the student's evaluator cannot score "
            '(another dataset, other classes, another task or output '
            'format)'
            + self._classes(distiller) + '. Make the teacher config match '
            "the student's dataset, or, when distilling features that do "
            'not depend on the predictions, remove TeacherCheckHook from '
            'custom_hooks (training then starts unchecked).')

    @torch.no_grad()
    def evaluate_teacher(self, runner) -> Dict[str, object]:
        """Score the teacher on ``num_batches`` validation batches per rank;
        returns the evaluator's metrics (also kept in ``self.metrics``), or
        ``{}`` when the teacher's classes differ from the dataset's
        (``self.skipped`` says so; only the ``teacher.dtype`` comparison
        runs then)."""
        distiller = distiller_of(runner, 'TeacherCheckHook')
        teacher = distiller.teacher
        # building a loader and its iterator draw seeds: the training
        # stream must not see them
        states = get_rng_state()
        was_training = teacher.training
        count = batches = 0
        failure = None  # what this process raised while scoring
        try:
            loader = self._dataloader(runner)
            dataset = loader.dataset
            classes = (getattr(dataset, 'metainfo', None) or {}).get(
                'classes')
            self._num_classes = len(classes) if classes else None
            self.skipped = self._skip_reason(teacher)
            self.precision = {}
            if self.skipped is not None:
                print_log(f'TeacherCheckHook: not scoring the teacher: '
                          f'{self.skipped}; training goes on.',
                          logger='current', level=logging.WARNING)
                self.metrics = {}
                try:
                    self._compare_precision(distiller, loader)
                except Exception as error:
                    failure = error
                failed = torch.tensor([0, int(failure is not None)],
                                      dtype=torch.int64)
                all_reduce(failed)  # every process skips: all get here
                if int(failed[1]):
                    self._stop_together(failure)
                return self.metrics
            evaluator = self._evaluator(runner)
            if hasattr(dataset, 'metainfo'):
                evaluator.dataset_meta = dataset.metainfo
            raised = []
            notes = self._watch_metrics(evaluator, raised)
            teacher.eval()
            batches_of = None
            for index in range(self.num_batches):
                # an error stops this loop, not the process: the others
                # learn of it below instead of waiting for this one (a
                # batch that cannot be read too)
                try:
                    if batches_of is None:
                        batches_of = iter(loader)
                    batch = next(batches_of, None)
                    if batch is None:  # the set ended
                        break
                    data = distiller.data_preprocessor(batch, False)
                    if index == 0:  # teacher.dtype: half against float32
                        self.precision = \
                            distiller.teacher_runner.half_precision_error(
                                data['inputs'], data.get('data_samples'))
                    convert = distiller.teacher_runner.convert_input
                    if convert is not None:  # data_preprocessor='own'
                        data['inputs'] = convert(data['inputs'])
                    outputs = teacher(**data, mode='predict')
                except Exception as error:
                    failure = error
                    break
                try:
                    evaluator.process(data_samples=outputs,
                                      data_batch=batch)
                except Exception as error:
                    failure = self._scoring_failed(distiller, evaluator,
                                                   _error_text(error))
                    failure.__cause__ = error
                    break
                count += len(outputs)
                batches += 1
        finally:
            teacher.train(was_training)
            set_rng_state(states)
        # [images scored, processes that failed]: a no-op outside a
        # distributed run
        total = torch.tensor([count, int(failure is not None)],
                             dtype=torch.int64)
        all_reduce(total)
        if int(total[1]):
            self._stop_together(failure)
        size = int(total[0])
        if hasattr(dataset, '__len__'):
            size = min(size, len(dataset))
        if size == 0:
            raise ValueError('TeacherCheckHook: the validation dataloader '
                             'gave no batch.')
        # the evaluator may print tables of its own (mmseg's per-class IoU):
        # say whose they are
        print_log(f'TeacherCheckHook: scoring the teacher (not the student) '
                  f'on {size} validation images; what the evaluator prints '
                  'next is the teacher\'s.', logger='current')
        try:
            metrics = dict(evaluator.evaluate(size))
        except Exception as error:
            raise self._scoring_failed(distiller, evaluator,
                                       _error_text(error)) from error
        # the metrics are computed, and the notes taken, on the main process
        # only; the evaluator broadcasts its metrics, the notes follow
        shared = [notes]
        broadcast_object_list(shared)
        notes = shared[0]
        if 'error' in notes:  # every process stops with the main one
            error = self._scoring_failed(distiller, evaluator, notes['error'])
            raise error from (raised[0] if raised else None)
        empty = notes.get('no_detections')
        self._no_detections = bool(empty) and not any(
            _is_number(v) for v in metrics.values())
        if self._no_detections:
            metrics[empty] = 0.0  # not one box above the score threshold
        self.metrics = metrics
        self._num_samples = size
        self._num_batches = batches  # this rank's (fewer if the set ends)
        self._constant_miou = notes.get('constant_miou')
        return self.metrics

    @staticmethod
    def _stop_together(failure: Optional[Exception]) -> None:
        """Some process failed while scoring (every process gets here): the
        one that failed raises its error, the others an error naming it,
        instead of waiting for it in the evaluator's gather until the
        launcher's timeout."""
        texts = all_gather_object(
            None if failure is None else _error_text(failure))
        if failure is not None:
            raise failure
        ranks = [rank for rank, text in enumerate(texts) if text]
        raise TeacherCheckError(
            f'TeacherCheckHook: process {ranks[0]} failed while scoring '
            f'the teacher ({texts[ranks[0]]}); this process stops with it. '
            f'The error and its traceback are in process {ranks[0]}\'s '
            'output.')

    def _compare_precision(self, distiller, loader) -> None:
        """Only the ``teacher.dtype`` comparison, on the first batch."""
        if distiller.teacher_runner.dtype not in (torch.float16,
                                                  torch.bfloat16):
            return
        teacher = distiller.teacher
        was_training = teacher.training
        teacher.eval()
        try:
            for batch in loader:
                data = distiller.data_preprocessor(batch, False)
                self.precision = \
                    distiller.teacher_runner.half_precision_error(
                        data['inputs'], data.get('data_samples'))
                break
        finally:
            teacher.train(was_training)

    def _report(self, runner, metrics: Dict[str, object]) -> None:
        numbers = {f'teacher/{k}': float(v) for k, v in metrics.items()
                   if _is_number(v)}
        text = ', '.join(f'{k}: {v:.4g}' for k, v in numbers.items())
        runner.logger.info(
            f'TeacherCheckHook: the teacher on {self._num_samples} '
            f'validation images ({self._num_batches} batches per rank): '
            f'{text}')
        for key, value in numbers.items():
            runner.message_hub.update_scalar(key, value)
        if numbers:
            runner.visualizer.add_scalars(numbers, step=runner.iter)

    # -------------------------------------------------------------- hook
    def before_train(self, runner) -> None:
        states = get_rng_state()
        try:
            metrics = self.evaluate_teacher(runner)
            if self.skipped is None:
                # a visualiser backend may draw random numbers when it
                # starts
                self._report(runner, metrics)
        finally:
            set_rng_state(states)
        if self.skipped is not None:  # the classes differ: not scored
            self._check_precision(runner)
            return
        key = main_metric(metrics, self.metric)
        score = float(metrics[key])
        problems = []
        if self.min_score is not None and score < self.min_score:
            problems.append(f'below min_score={self.min_score:g}')
        if self.check_chance:
            chance = chance_level(key, self._num_classes, self._num_samples,
                                  self._constant_miou)
            if chance is not None and score <= chance[0]:
                problems.append(f'at chance level ({chance[1]})')
        if self._no_detections:
            problems.append('the teacher predicted no box above its '
                            "test_cfg's score threshold")
        self._check_precision(runner)
        if problems:
            raise TeacherCheckError(self._message(runner, key, score,
                                                  problems))
        print_log(f'TeacherCheckHook: the teacher passes ({key} = '
                  f'{score:.4g}).', logger='current')

    def _check_precision(self, runner) -> None:
        """Log how far ``teacher.dtype``'s features are from float32 on the
        first batch; stop (every rank) when they are not finite there."""
        distiller = distiller_of(runner, 'TeacherCheckHook')
        if distiller.teacher_runner.dtype not in (torch.float16,
                                                  torch.bfloat16):
            return
        dtype = str(distiller.teacher_runner.dtype).replace('torch.', '')
        overflow = sorted(n for n, (_, ok) in self.precision.items()
                          if not ok)
        flag = torch.tensor(int(bool(overflow)), dtype=torch.int64)
        all_reduce(flag)  # a no-op outside a distributed run
        if int(flag):
            where = (', '.join(overflow) if overflow
                     else 'on another process')
            fix = ("Set teacher.dtype='bfloat16' (float32's range) or "
                   'remove teacher.dtype.' if dtype == 'float16' else
                   'Remove teacher.dtype (the teacher then runs in '
                   'float32).')
            raise TeacherCheckError(
                f"teacher.dtype='{dtype}': the teacher's tapped features "
                f'hold inf or NaN on the first validation batch ({where}), '
                'where they are finite in float32: its activations overflow '
                f'{dtype}. {fix}')
        if self.precision:
            worst = max(self.precision, key=lambda n: self.precision[n][0])
            error = self.precision[worst][0]
            print_log(
                f"TeacherCheckHook: teacher.dtype='{dtype}': its tapped "
                f'features differ from float32 by at most {100 * error:.2g}% '
                f'(relative norm, {worst}) on the first validation batch.',
                logger='current',
                level=logging.WARNING if error > 0.1 else logging.INFO)

    def _message(self, runner, key: str, score: float,
                 problems: List[str]) -> str:
        distiller = distiller_of(runner, 'TeacherCheckHook')
        teacher_cfg = (runner.cfg.get('model', {}) or {}).get('teacher', {}) \
            if runner.cfg else {}
        checkpoint = teacher_cfg.get('checkpoint', '?')
        config = teacher_cfg.get('config', '?')
        lines = [
            f'The teacher scores {key} = {score:.4g} on '
            f'{self._num_samples} validation images: '
            + ' and '.join(problems) + '. Distilling from it would teach '
            'the student nothing useful. Usual causes:',
            f'  1. the checkpoint does not match the teacher config '
            f'(checkpoint {checkpoint!r}, config {config!r}): use the '
            'weights released with that config; a checkpoint loaded with '
            'strict=False may have filled only part of the model (see the '
            "log's loaded share).",
            '  2. the student\'s data preprocessor, which feeds the teacher, '
            'normalises unlike the teacher\'s training (BGR/RGB order, '
            'mean/std)' + self._preprocessing(distiller) + '.',
            '  3. a wrong teacher config (another dataset, other classes, '
            'another test_cfg)' + self._classes(distiller) + '.',
            'Fix the cause; for a teacher that is weak on purpose, lower '
            'min_score, set check_chance=False, or remove TeacherCheckHook '
            'from custom_hooks.'
        ]
        return '\n'.join(lines)

    @staticmethod
    def _preprocessing(distiller) -> str:
        from mmdistill.distillers.teacher import preprocessing_differences
        teacher = getattr(distiller.teacher, 'data_preprocessor', None)
        if teacher is None:
            return ''
        if distiller.teacher_runner.convert_input is not None:
            return (" (here the teacher re-normalises its input its own way:"
                    " teacher.data_preprocessor='own')")
        found = preprocessing_differences(distiller.data_preprocessor,
                                          teacher)
        if not found:
            return (' (here both configs use the same channel order, mean '
                    'and std)')
        return (': here they differ (' + '; '.join(found) + '); set '
                "teacher=dict(..., data_preprocessor='own'), make the "
                "student's data_preprocessor match the teacher's, or train "
                'the teacher with the student\'s')

    def _classes(self, distiller) -> str:
        counts = teacher_class_counts(distiller.teacher)
        if not counts or self._num_classes is None:
            return ''
        if self._num_classes in counts:
            return (f' (here the teacher predicts {self._num_classes} '
                    'classes like the dataset)')
        return (f': here the teacher predicts {counts} classes, the '
                f'dataset has {self._num_classes}')
