"""How hooks reach the distiller."""
from mmengine.model import is_model_wrapper


def distiller_of(runner, owner: str):
    """The runner's SingleTeacherDistiller (unwrapped from DDP), or a clear
    error naming ``owner``."""
    from mmdistill.distillers import SingleTeacherDistiller
    model = runner.model.module if is_model_wrapper(runner.model) \
        else runner.model
    if not isinstance(model, SingleTeacherDistiller):
        raise TypeError(
            f'{owner} works on a distillation model, but the runner trains '
            f'a {type(model).__name__}: set model.type to '
            "'mmdistill.SingleTeacherDistiller' or remove the hook from "
            'custom_hooks.')
    return model


def train_log_header(runner, batch_idx: int) -> str:
    """The header mmengine's ``LogProcessor`` starts a training log line
    with, for this iteration: ``Iter(train) [ 20/80000]`` (``by_epoch=False``,
    mmseg) or ``Epoch(train)  [3][ 20/7330]`` (``by_epoch=True``, mmdet,
    mmpretrain), so that a hook's line lines up with the runner's."""
    if not getattr(runner.log_processor, 'by_epoch', True):
        total = runner.max_iters
        return f'Iter(train) [{str(runner.iter + 1).rjust(len(str(total)))}' \
               f'/{total}]'
    total = len(runner.train_dataloader)
    epoch = f'[{runner.epoch + 1}]'.rjust(len(str(runner.max_epochs)) + 3)
    return f'Epoch(train){epoch}' \
           f'[{str(batch_idx + 1).rjust(len(str(total)))}/{total}]'
