"""Feature statistics of the distillation pairs, logged during training."""
from mmengine.hooks import Hook

from mmdistill.registry import HOOKS
from .distill_loss_schedule import distiller_of


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
    They are computed without gradients on the iteration's own features, so
    the model runs no extra forward, on each rank's own batch (rank 0's are
    logged). ``loss`` is the pair's loss before a
    :class:`DistillLossScheduleHook` factor; with a ``TaTConnector`` in
    anchor-output mode the teacher entries describe its pooled target.

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
        distiller = distiller_of(runner, 'FeatureStatsHook')
        collect = self.every_n_train_iters(runner, self.interval)
        if collect:
            distiller.feature_stats.clear()
        # set every iteration: an iteration that raised may have left it on
        distiller.collect_stats = collect

    def after_train_iter(self, runner, batch_idx: int, data_batch=None,
                         outputs=None) -> None:
        if not self.every_n_train_iters(runner, self.interval):
            return
        distiller = distiller_of(runner, 'FeatureStatsHook')
        distiller.collect_stats = False
        # kept on the distiller until the next collection, for other hooks
        stats = dict(distiller.feature_stats)
        if not stats:
            return  # no pair ran (the schedule switched distillation off)
        scalars = {
            f'distill_stats/{pair}/{key}': value
            for pair, values in stats.items()
            for key, value in values.items()
        }
        runner.visualizer.add_scalars(scalars, step=runner.iter + 1)
        if self.log:
            for pair, values in stats.items():
                text = ', '.join(f'{k}: {v:.4g}' for k, v in values.items())
                runner.logger.info(
                    f'Iter(train) [{runner.iter + 1}] distill {pair}: '
                    f'{text}')
