"""mmdistill.analysis.memory: the peak of the bytes held by tensors on the
CPU, counted from known allocations."""
import torch
from torch import nn

from mmdistill.analysis.memory import (cpu_peak_allocated, peak_step_memory,
                                       state_tensors, tensor_bytes)

MB = 1000 * 1000


def test_tensor_bytes_counts_each_storage_once():
    x = torch.zeros(10, 10)
    y = torch.zeros(3, dtype=torch.float64)
    assert tensor_bytes([x, x[1:], x.t(), None, y]) == 400 + 24


def test_peak_is_the_highest_net_allocation():

    def work():
        a = torch.empty(MB // 4)          # 1 MB
        b = torch.empty(MB // 8)          # + 0.5 MB
        del a                             # - 1 MB
        c = torch.empty(3 * MB // 4)      # + 3 MB: peak 3.5 MB
        return b, c

    (b, c), peak = cpu_peak_allocated(work)
    assert peak == MB // 2 + 3 * MB
    # the same step again: tensors from before it are not counted
    _, peak = cpu_peak_allocated(lambda: torch.empty(MB // 4))
    assert peak == MB


class WithTeacher(nn.Module):
    """A model that keeps a teacher outside its modules, as the distiller
    does."""

    def __init__(self):
        super().__init__()
        self.student = nn.Linear(10, 20)          # 220 floats
        self.register_buffer('count', torch.zeros(5))
        object.__setattr__(self, 'teacher', nn.Linear(30, 10))  # 310


def test_step_peak_adds_the_state_held_before_it():
    model = WithTeacher()
    assert 'teacher' not in dict(model.named_children())
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    loss = model.student(torch.ones(2, 10)).sum()
    loss.backward()
    optimizer.step()  # momentum buffers now exist
    state = (220 + 220 + 220 + 5 + 310) * 4  # params, grads, momentum,
    # buffer, teacher
    assert tensor_bytes(state_tensors(model, optimizer)) == state
    peak = peak_step_memory(lambda: torch.empty(MB // 4), model, optimizer,
                            torch.device('cpu'))
    assert peak == state + MB
