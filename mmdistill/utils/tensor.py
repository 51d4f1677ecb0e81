"""Small tensor helpers shared by losses and connectors."""
import contextlib
import threading

import torch


def autocast_enabled(device_type: str) -> bool:
    """Whether autocast is on for ``device_type`` (torch 2.1 to 2.13)."""
    try:
        return bool(torch.is_autocast_enabled(device_type))
    except TypeError:  # torch < 2.4: no device argument
        if device_type == 'cpu':
            return torch.is_autocast_cpu_enabled()
        if device_type == 'cuda':
            return torch.is_autocast_enabled()
        return False


def autocast_dtype(device_type: str):
    """The dtype autocast computes in on ``device_type``, None when it is
    off (torch 2.1 to 2.13).

    Args:
        device_type (str): ``'cpu'``, ``'cuda'``, ...

    Returns:
        torch.dtype | None: The autocast dtype, or None.
    """
    if not autocast_enabled(device_type):
        return None
    if hasattr(torch, 'get_autocast_dtype'):  # torch >= 2.4
        return torch.get_autocast_dtype(device_type)
    if device_type == 'cpu':
        return torch.get_autocast_cpu_dtype()
    return torch.get_autocast_gpu_dtype()


def upcast(x: torch.Tensor) -> torch.Tensor:
    """Return ``x`` in float32 when it is half precision, unchanged otherwise.

    Losses are computed in at least float32 under AMP, and keep float64 when
    given float64 (the tests compare against float64 references).
    """
    if x.dtype in (torch.float16, torch.bfloat16):
        return x.float()
    return x


def check_same_shape(
        owner: str,
        student: torch.Tensor,
        teacher: torch.Tensor,
        fix: str = ('add a connector that maps the student to the '
                    "teacher's channels and size.")) -> None:
    """Raise a ``ValueError`` naming both shapes and the fix when the
    student and teacher tensors a loss compares differ in shape."""
    if student.shape != teacher.shape:
        raise ValueError(
            f'{owner} needs equal shapes, got student {tuple(student.shape)}'
            f' and teacher {tuple(teacher.shape)}: {fix}')


def check_values(ok: torch.Tensor, message: str,
                 error: type = ValueError) -> None:
    """Check a condition on tensor values without stalling an accelerator.

    On the CPU (where reading a value costs nothing) a false ``ok`` raises
    ``error(message)``. On a GPU the check is queued with
    ``torch._assert_async``: the run still stops with ``message`` (as a
    device-side assertion, reported at the next synchronisation), but the
    host never waits for the value.

    Args:
        ok (Tensor): A boolean scalar (or a tensor that must be all true).
        message (str): What is wrong and how to fix it.
        error (type): The exception raised on the CPU.
    """
    ok = ok.all() if ok.numel() != 1 else ok.reshape(())
    if ok.device.type == 'cpu':
        if not bool(ok):
            raise error(message)
    else:
        torch._assert_async(ok, message)


_GRADIENTS_IN_PLACE = threading.local()


@contextlib.contextmanager
def gradients_in_place():
    """Let mmdistill's memory-saving autograd functions created within write
    gradients over tensors of their own (TaT's patch-group attention over
    its queries, keys and values; ``MSELoss`` over a connector output that
    nothing else holds).

    The distiller runs each pair's connector and loss in it: there the
    backward runs once per forward and nothing reads those tensors after
    it. Outside it (a connector or loss used on its own) they keep their
    inputs as they are, and a second backward (``retain_graph``) works.
    """
    before = getattr(_GRADIENTS_IN_PLACE, 'on', False)
    _GRADIENTS_IN_PLACE.on = True
    try:
        yield
    finally:
        _GRADIENTS_IN_PLACE.on = before


def gradients_in_place_allowed() -> bool:
    """Whether :func:`gradients_in_place` is active (in this thread)."""
    return getattr(_GRADIENTS_IN_PLACE, 'on', False)
