"""The speed settings each complete a one-epoch run on the CPU: channels_last, bf16-mixed,
the image cache with device augmentation, and torch.compile (slow); a larger validation batch
(valid_batch_size) gives the same numbers."""

from __future__ import annotations

import shutil

import pytest
import torch

from configuration import TEMPLATE_PATH, load_config
from models import speed
from models.arch_dict import build_network
from models.net_module import NetModule
from models.speed import prepare_network
from utils.errors import UserError
from utils.logger import lightning_info_off
from workflows.training.callbacks import make_trainer
from workflows.training.run import build_datamodule, run_training

QUIET = ("num_epochs=1", "log_to_mlflow=false", "image_size=[32,32]")


def _completes(config) -> dict:
    result = run_training(config, progress_bar=False)
    summary = result.summary
    assert summary["epochs_run"] == 1 and summary["max_valid_acc"] is not None
    assert result.best_checkpoint.exists()
    return summary


@pytest.mark.parametrize(
    "overrides",
    [
        ("channels_last=true",),
        ("precision=bf16-mixed",),
        ("cache_images=true", "augment_on=device", "augment_tensors=true"),
    ],
    ids=["channels_last", "bf16", "cache+device"],
)
def test_speed_setting_completes_a_run(fast_config, prepared_data, tmp_path, overrides):
    data = shutil.copytree(prepared_data, tmp_path / "prepared")  # the cache is written beside it
    _completes(fast_config(*QUIET, *overrides, data_path=data))
    if "cache_images=true" in overrides:
        assert list((data / ".cache").glob("train-*.json"))


def test_a_larger_validation_batch_gives_the_same_numbers(fast_config):
    torch.manual_seed(0)
    net = build_network("ghost", 3).eval()
    metrics, sizes = [], []
    for valid_batch_size in ("null", "8"):
        config = fast_config(*QUIET, f"valid_batch_size={valid_batch_size}")
        data = build_datamodule(config)
        data.setup("fit")
        sizes.append((data.train_dataloader().batch_size, data.val_dataloader().batch_size))
        module = NetModule(net, torch.nn.CrossEntropyLoss(), data.num_classes)
        trainer = make_trainer(
            max_epochs=None, accelerator="cpu", devices=1, callbacks=[], progress_bar=False
        )
        with lightning_info_off():
            trainer.validate(module, datamodule=data, verbose=False)
        metrics.append(module.epoch_metrics)
    assert sizes == [(4, 4), (4, 8)]  # fast_config's batch_size is 4; training keeps it
    assert metrics[1]["valid_acc"] == metrics[0]["valid_acc"]
    assert metrics[1]["valid_loss"] == pytest.approx(metrics[0]["valid_loss"], rel=1e-5)


@pytest.mark.slow
def test_compiled_run_completes(fast_config, monkeypatch):
    # Dynamo traces the network inside Lightning's training and validation as on a GPU (about
    # 40 s here); inductor's C++ build for the CPU takes many minutes on 2 cores, so code
    # generation is left to the GPU benchmark (benchmarks/run.py, step/compile rows).
    monkeypatch.setattr(speed, "COMPILE_BACKEND", "eager")
    _completes(fast_config(*QUIET, "compile=true", "channels_last=true"))


def test_compiled_network_keeps_its_state_dict_keys():
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4))
    keys = list(net.state_dict())
    prepared = prepare_network(net, channels_last=True, compile=True)
    assert list(prepared.state_dict()) == keys
    assert prepared[0].weight.is_contiguous(memory_format=torch.channels_last)


# ---- compile_mode ----------------------------------------------------------------------------
def _record_compile(monkeypatch) -> list[dict]:
    """torch.compile replaced by a recorder of its arguments (nothing is compiled)."""
    calls = []

    def record(fn, **kwargs):
        calls.append(kwargs)
        return fn

    monkeypatch.setattr(torch, "compile", record)
    return calls


@pytest.mark.parametrize("mode", ["default", "reduce-overhead", "max-autotune"])
def test_compile_mode_reaches_torch_compile(monkeypatch, mode):
    calls = _record_compile(monkeypatch)
    prepare_network(torch.nn.Linear(2, 2), compile=True, mode=mode)
    assert calls == [{"backend": speed.COMPILE_BACKEND, "mode": mode}]


def test_configured_compile_mode_reaches_torch_compile(fast_config, monkeypatch):
    calls = _record_compile(monkeypatch)
    _completes(fast_config(*QUIET, "compile=true", "compile_mode=reduce-overhead"))
    assert [call["mode"] for call in calls] == ["reduce-overhead"]


@pytest.mark.parametrize(
    "overrides",
    [("compile=true", "compile_mode=fastest"), ("compile_mode=reduce-overhead",)],
    ids=["unknown mode", "mode without compile"],
)
def test_bad_compile_mode_is_a_config_error(tmp_path, overrides):
    with pytest.raises(UserError, match="compile_mode"):
        load_config(TEMPLATE_PATH, list(overrides), data_path=str(tmp_path))
