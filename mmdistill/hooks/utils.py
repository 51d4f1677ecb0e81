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
