"""The progress bar counts epochs as people do: ``Epoch 1/3`` to ``Epoch 3/3``."""

from __future__ import annotations

import re

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, TensorDataset

from workflows.training import callbacks
from workflows.training.callbacks import EpochProgressBar, make_trainer


class _OneWeight(pl.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(1))

    def training_step(self, batch, batch_idx):
        return (self.weight - batch[0]).pow(2).mean()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def test_first_hour_progress_bar_counts_epochs_from_one(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(callbacks, "on_terminal", lambda: True)  # bars only on a terminal
    trainer = make_trainer(
        max_epochs=3,
        accelerator="cpu",
        devices=1,
        callbacks=[],
        progress_bar=True,
        root_dir=tmp_path,
    )
    assert any(isinstance(c, EpochProgressBar) for c in trainer.callbacks)
    trainer.fit(_OneWeight(), DataLoader(TensorDataset(torch.ones(2)), batch_size=2))
    shown = capsys.readouterr().out  # where Lightning's bars write
    assert "Epoch 1/3" in shown and "Epoch 3/3" in shown, shown
    finished = re.findall(r"Epoch (\S+): 100%", shown)  # each epoch's last state
    assert sorted(set(finished)) == ["1/3", "2/3", "3/3"], shown
