"""Masked generative distillation (MGD), the loss half.

Paper: "Masked Generative Distillation", Zhendong Yang et al., ECCV 2022
(arXiv:2205.01529). Implemented: Section 3, the generative distillation loss
(the squared error between the generated feature ``G(S * M)`` and the
teacher feature, weighted by alpha); the mask and the generation block are
``MGDConnector``.
"""
from typing import Optional

from mmdistill.registry import MODELS
from .l2 import L2Loss


@MODELS.register_module()
class MGDLoss(L2Loss):
    """``loss = alpha * sum((G(S * M) - T)^2) / N``.

    The student S is masked by a random spatial mask M and passed through
    the generation block G by ``MGDConnector``; this loss receives
    ``S' = G(S * M)`` and is the feature L2 loss of :class:`L2Loss`
    (summed over every element, divided by the batch size N). The MGD paper
    uses alpha = 2e-5 for one-stage detectors.

    ``alpha`` and ``loss_weight`` name the same weight (``loss_weight`` is the
    name every mmdistill loss shares, ``alpha`` the paper's); give either.
    The value is stored in ``loss_weight`` and ``alpha`` reads and writes it.

    Args:
        alpha (float, optional): weight of the loss. Defaults to 1.0 when
            neither it nor ``loss_weight`` is given.
        loss_weight (float, optional): alias of ``alpha``. Giving both with
            different values raises ValueError.
    """

    def __init__(self,
                 alpha: Optional[float] = None,
                 loss_weight: Optional[float] = None) -> None:
        if alpha is not None and loss_weight is not None \
                and alpha != loss_weight:
            raise ValueError(
                f'MGDLoss got alpha={alpha} and loss_weight={loss_weight}; '
                'they are the same weight: give only one of them.')
        weight = alpha if alpha is not None else loss_weight
        super().__init__(loss_weight=1.0 if weight is None else weight)

    @property
    def alpha(self) -> float:
        """float: the weight, same as ``loss_weight``."""
        return self.loss_weight

    @alpha.setter
    def alpha(self, value: float) -> None:
        self.loss_weight = value
