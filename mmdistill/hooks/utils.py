"""How hooks reach the distiller, and what they share."""
from mmengine.model import is_model_wrapper

from mmdistill.utils.config import hook_name


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


def config_places(runner, name: str) -> list:
    """Where ``runner.cfg`` lists a hook of class ``name``:
    ``['default_hooks.student_checkpoint', 'custom_hooks[0]']``."""
    def named(hook) -> bool:
        return isinstance(hook, dict) and hook_name(hook) == name

    cfg = getattr(runner, 'cfg', None) or {}
    return [f'default_hooks.{key}' for key, hook in
            (cfg.get('default_hooks', None) or {}).items() if named(hook)] + [
        f'custom_hooks[{i}]' for i, hook in
        enumerate(cfg.get('custom_hooks', None) or []) if named(hook)]


def check_registered_once(hook, runner, doing: str) -> None:
    """Stop before training when the Runner holds more than one hook of
    ``hook``'s class (each would do ``doing``), naming the config entries.

    mmdistill's distiller configs add ``StudentCheckpointHook`` and
    ``RNGStateHook`` to ``default_hooks``; a config written for an earlier
    version may list them again in ``custom_hooks``.
    """
    same = [h for h in runner.hooks if type(h) is type(hook)]
    if len(same) < 2 or same[0] is not hook:
        return
    name = type(hook).__name__
    places = config_places(runner, name)
    fix = '.'
    if any(p.startswith('custom_hooks') for p in places):
        fix = (": remove it from custom_hooks (mmdistill's configs put it "
               'in default_hooks).')
    raise ValueError(
        f'{name} is registered {len(same)} times'
        + (f' ({", ".join(places)})' if places else '') + f': each would '
        f'{doing}. Keep one{fix}')
