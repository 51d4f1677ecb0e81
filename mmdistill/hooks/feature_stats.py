"""Feature statistics of the distillation pairs, logged during training."""
from typing import Dict

import torch
from mmengine.hooks import Hook

from mmdistill.distillers.controls import feature_stats_tensors
from mmdistill.registry import HOOKS
from .utils import distiller_of, train_log_header


def feature_stats(features: Dict[str, tuple]) -> Dict[str, Dict[str, float]]:
    """Statistics of the distillation pairs, read back in one transfer.

    Distances are mean squared differences per element (the MLP-connector
    paper, Table 6, compares the L2 distance before and after the
    connector); ``cos`` is the cosine similarity of each sample's flattened
    features, averaged. Entries that need equal shapes are left out when
    the shapes differ.

    Args:
        features (dict): Pair -> ``(raw, student, teacher, loss)``: ``raw``
            is the student tap before the connector, ``student`` after it.

    Returns:
        dict[str, dict[str, float]]: Pair -> name -> value.
    """
    return read_stats({name: feature_stats_tensors(*values)
                       for name, values in features.items()})


def read_stats(
        tensors: Dict[str, Dict[str, torch.Tensor]]
) -> Dict[str, Dict[str, float]]:
    """Statistics computed on the device, read back in one transfer.

    Args:
        tensors (dict): Pair -> name -> 0-d tensor
            (:func:`feature_stats_tensors`, ``DistillControls.take_stats``).

    Returns:
        dict[str, dict[str, float]]: Pair -> name -> value.
    """
    flat = [v for values in tensors.values() for v in values.values()]
    if not flat:
        return {}
    floats = iter(torch.stack(flat).tolist())
    return {name: {key: next(floats) for key in values}
            for name, values in tensors.items()}


@HOOKS.register_module()
class FeatureStatsHook(Hook):
    """Log, every ``interval`` training iterations, per distillation pair:
    the loss, mean and std of the student tap (before the connector) and of
    the teacher tap, and when the shapes allow, the mean squared difference
    and the cosine similarity between student and teacher before and after
    the connector (the MLP-connector paper, Liu et al., ICCV-W 2023,
    Table 6: the connector should bring the student closer to the
    teacher).

    The values go to the visualiser's backends (``vis_data/scalars.json``,
    TensorBoard, W&B, as configured) under ``distill_stats/<pair>/<name>``
    at the iteration's step, and one compact line per pair to the log.
    They are computed without gradients on the iteration's own features, as
    each pair runs (no feature map is kept for them), so the model runs no
    extra forward, on each rank's own batch (rank 0's are logged). ``loss``
    is the pair's loss with its loss config's ``loss_weight``, before an
    automatic weight (``loss_weight='auto'``) and a
    :class:`DistillLossScheduleHook` factor. A pair without a connector
    gets ``mse`` and ``cos`` once (its tap is what the loss compares); a
    connector that changes the channels leaves no "before" entries;
    with a ``TaTConnector`` in anchor-output mode the teacher entries
    describe its pooled target.

    Example::

        custom_hooks = [dict(type='mmdistill.FeatureStatsHook',
                             interval=50)]

    Args:
        interval (int): log every this many iterations. Defaults to 50.
        log (bool): also print one line per pair to the log. Defaults to
            True.
    """
    priority = 'BELOW_NORMAL'

    def __init__(self, interval: int = 50, log: bool = True) -> None:
        if interval < 1:
            raise ValueError(f'interval must be >= 1, got {interval}.')
        self.interval = interval
        self.log = log

    def before_train(self, runner) -> None:
        distiller_of(runner, 'FeatureStatsHook')

    def before_train_iter(self, runner, batch_idx: int,
                          data_batch=None) -> None:
        controls = distiller_of(runner, 'FeatureStatsHook').controls
        collect = self.every_n_train_iters(runner, self.interval)
        if collect:
            controls.take_stats()  # an iteration that raised left some
        # set every iteration: an iteration that raised may have left it on
        controls.collect_stats = collect

    def after_train_iter(self, runner, batch_idx: int, data_batch=None,
                         outputs=None) -> None:
        if not self.every_n_train_iters(runner, self.interval):
            return
        controls = distiller_of(runner, 'FeatureStatsHook').controls
        controls.collect_stats = False
        stats = read_stats(controls.take_stats())
        # kept until the next collection, for other hooks
        controls.feature_stats = stats
        if not stats:
            return  # no pair ran (the schedule switched distillation off)
        scalars = {
            f'distill_stats/{pair}/{key}': value
            for pair, values in stats.items()
            for key, value in values.items()
        }
        runner.visualizer.add_scalars(scalars, step=runner.iter + 1)
        if self.log:
            header = train_log_header(runner, batch_idx)
            for pair, values in stats.items():
                text = ', '.join(f'{k}: {v:.4g}' for k, v in values.items())
                runner.logger.info(f'{header}  distill {pair}: {text}')
