"""Label Smoothing Cross Entropy (thesis section 4.2.1).

    loss = (1 - epsilon) * ce(i) + epsilon * sum_j ce(j) / N

where ce(j) = -log softmax(x)_j is the cross entropy the sample would have if its label were j,
i the true class and N the number of classes. This equals
``torch.nn.CrossEntropyLoss(label_smoothing=epsilon)``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.nn.modules.loss import _Loss

REDUCTIONS = ("mean", "sum", "none")


class LabelSmoothingCrossEntropy(_Loss):
    """Cross entropy against targets smoothed towards the uniform distribution.

    Args:
        epsilon: smoothing coefficient in [0, 1); 0 gives plain cross entropy.
        reduction: 'mean' (over the batch), 'sum' or 'none' (one loss per sample).

    Shapes: input (batch, classes) logits, target (batch,) class indices.
    """

    def __init__(self, epsilon: float = 0.1, reduction: str = "mean"):
        if reduction not in REDUCTIONS:
            raise ValueError(f"reduction must be one of {', '.join(REDUCTIONS)}; got {reduction!r}")
        try:
            epsilon = float(epsilon)
        except (TypeError, ValueError):
            raise ValueError(f"epsilon must be a number in [0, 1); got {epsilon!r}") from None
        if not 0.0 <= epsilon < 1.0:
            raise ValueError(f"epsilon must be in [0, 1); got {epsilon!r}")
        super().__init__(reduction=reduction)
        self.epsilon = epsilon

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:  # noqa: A002
        log_probs = F.log_softmax(input, dim=-1)
        true_class_ce = -log_probs.gather(-1, target.unsqueeze(-1)).squeeze(-1)
        mean_ce = -log_probs.mean(dim=-1)
        loss = (1.0 - self.epsilon) * true_class_ce + self.epsilon * mean_ce
        if self.reduction == "mean":
            return loss.mean()
        if self.reduction == "sum":
            return loss.sum()
        return loss

    def extra_repr(self) -> str:
        return f"epsilon={self.epsilon}, reduction={self.reduction!r}"
