"""LabelSmoothingCrossEntropy against torch's own label smoothing."""

from __future__ import annotations

import pytest
import torch

from models.label_smoothing_ce import LabelSmoothingCrossEntropy


@pytest.mark.parametrize("epsilon", [0.0, 0.05, 0.1, 0.3, 0.9])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_matches_torch(epsilon, reduction):
    torch.manual_seed(0)
    logits = torch.randn(8, 196) * 3
    target = torch.randint(0, 196, (8,))
    ours = LabelSmoothingCrossEntropy(epsilon, reduction)(logits, target)
    ref = torch.nn.CrossEntropyLoss(label_smoothing=epsilon, reduction=reduction)(logits, target)
    assert ours.shape == ref.shape
    torch.testing.assert_close(ours, ref, atol=1e-6, rtol=1e-6)


def test_thesis_formula():
    logits = torch.tensor([[2.0, 0.5, -1.0]])
    target = torch.tensor([0])
    ce = -torch.log_softmax(logits, dim=1)[0]
    expected = 0.9 * ce[0] + 0.1 * ce.mean()
    torch.testing.assert_close(LabelSmoothingCrossEntropy()(logits, target), expected)


def test_defaults_and_gradient():
    loss_fn = LabelSmoothingCrossEntropy()
    assert loss_fn.epsilon == 0.1 and loss_fn.reduction == "mean"
    logits = torch.randn(4, 5, requires_grad=True)
    loss_fn(logits, torch.tensor([0, 1, 2, 3])).backward()
    assert torch.isfinite(logits.grad).all()


@pytest.mark.parametrize("epsilon", [-0.1, 1.0, 1.5, "a"])
def test_invalid_epsilon(epsilon):
    with pytest.raises(ValueError, match="epsilon"):
        LabelSmoothingCrossEntropy(epsilon=epsilon)


def test_invalid_reduction():
    with pytest.raises(ValueError, match="reduction"):
        LabelSmoothingCrossEntropy(reduction="avg")
