"""NetModule's one step serves training, validation and testing (evaluation)."""

from __future__ import annotations

import pytest
import torch
from device_waits import DeviceWaits
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from models.label_smoothing_ce import LabelSmoothingCrossEntropy
from models.net_module import NetModule
from utils.logger import lightning_info_off
from workflows.training.callbacks import make_trainer
from workflows.training.failures import FiniteLossGuard, NonFiniteLoss


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
    with lightning_info_off():
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


class _Trainer:
    num_training_batches, current_epoch = 100, 0


def test_a_training_step_and_its_loss_guard_never_wait_for_the_device():
    torch.manual_seed(0)
    probe = DeviceWaits()
    with probe:
        net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.LazyLinear(3))
        net(torch.rand(2, 3, 6, 6))  # materialise the lazy layer before the move
        module = NetModule(net, LabelSmoothingCrossEntropy(0.1), 3, "AdamW").to("meta")
        optimizer = module.configure_optimizers()["optimizer"]
        guard = FiniteLossGuard()
        batch = (torch.rand(8, 3, 6, 6, device="meta"), torch.randint(0, 3, (8,), device="meta"))

        def step(idx: int) -> None:
            loss = module.training_step(batch, idx)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            guard.on_train_batch_end(_Trainer(), module, loss, batch, idx)

        step(0)  # the optimizer makes its state
        with probe.per_batch():
            for idx in range(1, FiniteLossGuard.CHECK_EVERY - 1):
                step(idx)
        assert probe.waits == []
        with probe.per_batch():
            step(FiniteLossGuard.CHECK_EVERY - 1)  # the guard reads its record: one wait
    assert [w.kind for w in probe.waits] == ["copy to host"]
    assert "failures.py" in probe.waits[0].where


def test_the_loss_guard_names_the_first_bad_batch_when_it_checks():
    guard, module = FiniteLossGuard(), None
    losses = [torch.tensor(1.0), torch.tensor(float("nan")), torch.tensor(float("inf"))]
    for idx, loss in enumerate(losses):
        guard.on_train_batch_end(_Trainer(), module, loss, None, idx)  # no check yet
    with pytest.raises(NonFiniteLoss, match="nan at epoch 0, batch 1"):
        for idx in range(len(losses), FiniteLossGuard.CHECK_EVERY):
            guard.on_train_batch_end(_Trainer(), module, torch.tensor(1.0), None, idx)


def test_the_mean_loss_weights_each_batch_by_its_size():
    module = NetModule(nn.Linear(4, 3), nn.CrossEntropyLoss(), 3)
    metric = module.losses["train_stage"]
    metric.update(torch.tensor(1.0), 6)
    metric.update(torch.tensor(4.0), 2)
    assert float(metric.compute()) == pytest.approx((6 * 1.0 + 2 * 4.0) / 8)
