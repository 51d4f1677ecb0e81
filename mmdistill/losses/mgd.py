"""Masked generative distillation (MGD), the loss half.

Paper: "Masked Generative Distillation", Zhendong Yang et al., ECCV 2022
(arXiv:2205.01529). Implemented: Section 3, the generative distillation loss
(the squared error between the generated feature ``G(S * M)`` and the
teacher feature, weighted by alpha, here ``loss_weight``); the mask and the
generation block are ``MGDConnector``.
"""
import warnings
from typing import Optional

from mmdistill.registry import MODELS
from .l2 import L2Loss


@MODELS.register_module()
class MGDLoss(L2Loss):
    """``loss = loss_weight * sum((G(S * M) - T)^2) / N``.

    The student S is masked by a random spatial mask M and passed through
    the generation block G by ``MGDConnector``; this loss receives
    ``S' = G(S * M)`` and is the feature L2 loss of :class:`L2Loss`
    (summed over every element, divided by the batch size N). The paper
    calls the weight alpha and uses 2e-5 for one-stage detectors; here it is
    ``loss_weight``, the name every mmdistill loss shares.

    Args:
        loss_weight (float): the weight (the paper's alpha). Defaults to 1.0.
        alpha (float, optional): former name of ``loss_weight``, still
            accepted with a DeprecationWarning.
    """

    def __init__(self,
                 loss_weight: float = 1.0,
                 alpha: Optional[float] = None) -> None:
        if alpha is not None:
            warnings.warn(
                'MGDLoss: alpha is now called loss_weight (the name every '
                'mmdistill loss uses for its weight): write loss_weight=...',
                DeprecationWarning)
            loss_weight = alpha
        super().__init__(loss_weight=loss_weight)
