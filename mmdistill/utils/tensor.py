"""Small tensor helpers shared by losses and connectors."""
import torch


def upcast(x: torch.Tensor) -> torch.Tensor:
    """Return ``x`` in float32 when it is half precision, unchanged otherwise.

    Losses are computed in at least float32 under AMP, and keep float64 when
    given float64 (the tests compare against float64 references).
    """
    if x.dtype in (torch.float16, torch.bfloat16):
        return x.float()
    return x
