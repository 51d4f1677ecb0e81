"""Kernels shared by several losses."""
import torch
import torch.nn.functional as F


def softmax_kl(student: torch.Tensor, teacher: torch.Tensor, tau: float,
               dim: int) -> torch.Tensor:
    """KL(softmax(T / tau) || softmax(S / tau)) along ``dim``.

    Returns:
        torch.Tensor: the divergence per slice, ``dim`` summed out (not yet
        multiplied by tau^2).
    """
    log_p_s = F.log_softmax(student / tau, dim=dim)
    log_p_t = F.log_softmax(teacher / tau, dim=dim)
    return (log_p_t.exp() * (log_p_t - log_p_s)).sum(dim=dim)
