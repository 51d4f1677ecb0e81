"""Peak memory of a training step, the same quantity on the CPU as on a GPU.

On a GPU, ``torch.cuda.max_memory_allocated`` gives the peak of the bytes
held by tensors. The CPU has no such counter, and the process's resident
memory is a poor stand-in: it includes the Python/torch baseline, only
grows, and the C allocator keeps freed pages. Here the CPU figure is built
from what torch itself allocates:

    peak = bytes held by tensors alive before the step (parameters, buffers,
           gradients, optimizer state, the teacher)
         + the highest running sum of the step's own allocations minus its
           frees (the torch profiler's memory events, in time order).

That is what ``max_memory_allocated`` counts on a GPU (without the CUDA
allocator's rounding and cuDNN workspaces), so ratios measured on the CPU
predict the GPU's.
"""
from typing import Any, Callable, Iterable, Optional, Tuple

import torch
from torch import nn


def tensor_bytes(tensors: Iterable[Optional[torch.Tensor]]) -> int:
    """Bytes of the distinct storages behind ``tensors`` (views and aliases
    of one storage count once; None entries are skipped).

    Args:
        tensors (Iterable[torch.Tensor | None]): The tensors.

    Returns:
        int: Their storages' total size in bytes.
    """
    storages = {}
    for tensor in tensors:
        if tensor is None:
            continue
        storage = tensor.untyped_storage()
        storages[(tensor.device, storage.data_ptr())] = storage.nbytes()
    return sum(storages.values())


def state_tensors(model: nn.Module,
                  optimizer: Optional[torch.optim.Optimizer] = None):
    """The tensors a model holds between steps: its parameters, their
    gradients, its buffers, the optimizer's state, and those of a teacher the
    model keeps outside its modules (``model.teacher``).

    Args:
        model (nn.Module): The model (a student or a distiller).
        optimizer (torch.optim.Optimizer, optional): Its optimizer.

    Yields:
        torch.Tensor: Each tensor (possibly several views of one storage).
    """
    modules = [model]
    teacher = getattr(model, 'teacher', None)
    if isinstance(teacher, nn.Module):
        modules.append(teacher)
    for module in modules:
        for param in module.parameters():
            yield param
            yield param.grad
        yield from module.buffers()
    if optimizer is not None:
        for state in optimizer.state.values():
            for value in state.values():
                if isinstance(value, torch.Tensor):
                    yield value


def _start(event) -> float:
    """An event's start time (``start_ns`` on recent torch, ``start_us``
    on older)."""
    if hasattr(event, 'start_ns'):
        return event.start_ns()
    return event.start_us() * 1e3


def cpu_peak_allocated(fn: Callable[[], Any]) -> Tuple[Any, int]:
    """Run ``fn`` and measure the highest net CPU allocation it reaches.

    Args:
        fn (Callable): The work (e.g. one ``train_step``).

    Returns:
        tuple: ``fn``'s result, and the peak in bytes of (allocated - freed)
        since ``fn`` started, from the torch profiler's memory events.
    """
    from torch.profiler import ProfilerActivity, profile
    with profile(activities=[ProfilerActivity.CPU],
                 profile_memory=True) as prof:
        result = fn()
    events = [
        e for e in prof.profiler.kineto_results.events()
        if e.name() == '[memory]'
        and e.device_type() == torch.autograd.DeviceType.CPU
    ]
    running = peak = 0
    for event in sorted(events, key=_start):
        running += event.nbytes()
        peak = max(peak, running)
    return result, peak


def peak_step_memory(step: Callable[[], Any], model: nn.Module,
                     optimizer: Optional[torch.optim.Optimizer],
                     device: torch.device) -> int:
    """Peak bytes allocated during one ``step`` of ``model``: the CUDA
    allocator's peak on a GPU; on the CPU, the model's state (see
    :func:`state_tensors`) plus the step's peak net allocation.

    Args:
        step (Callable): One training step.
        model (nn.Module): The model it trains.
        optimizer (torch.optim.Optimizer, optional): Its optimizer (its
            state counts, once it exists: run a step before this one).
        device (torch.device): Where the model lives.

    Returns:
        int: Peak bytes.
    """
    if device.type == 'cuda':
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        step()
        torch.cuda.synchronize(device)
        return torch.cuda.max_memory_allocated(device)
    held = tensor_bytes(state_tensors(model, optimizer))
    _, peak = cpu_peak_allocated(step)
    return held + peak


__all__ = [
    'tensor_bytes', 'state_tensors', 'cpu_peak_allocated', 'peak_step_memory'
]
