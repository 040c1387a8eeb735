"""NetModule's one step serves training, validation and testing (evaluation)."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from models.net_module import NetModule
from utils.logger import lightning_quiet
from workflows.callbacks import make_trainer


def test_test_stage_reports_what_a_direct_computation_gives():
    torch.manual_seed(0)
    num_classes = 7
    net = nn.Linear(4, num_classes)
    inputs = torch.randn(23, 4)
    labels = torch.randint(0, num_classes, (23,))
    loader = DataLoader(TensorDataset(inputs, labels), batch_size=5)  # last batch of 3
    module = NetModule(net, nn.CrossEntropyLoss(), num_classes)
    trainer = make_trainer(
        max_epochs=None, accelerator="cpu", devices=1, callbacks=[], progress_bar=False
    )
    with lightning_quiet():
        trainer.test(module, dataloaders=loader, verbose=False)
    results = module.test_results

    with torch.no_grad():
        logits = net(inputs)
    assert results["loss"] == pytest.approx(nn.functional.cross_entropy(logits, labels).item())
    predicted = logits.argmax(dim=1)
    assert results["top1"] == pytest.approx((predicted == labels).float().mean().item())
    top5 = logits.topk(5, dim=1).indices
    in_top5 = (top5 == labels[:, None]).any(dim=1).float().mean().item()
    assert results["top5_k"] == 5 and results["top5"] == pytest.approx(in_top5)
    expected = torch.zeros(num_classes, num_classes, dtype=torch.long)
    for t, p in zip(labels.tolist(), predicted.tolist()):
        expected[t, p] += 1
    assert torch.equal(results["confusion"], expected)


def test_top_k_is_capped_by_the_number_of_classes():
    module = NetModule(nn.Linear(2, 3), nn.CrossEntropyLoss(), num_classes=3)
    assert module.top_k == 3
