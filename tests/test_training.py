import csv
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

import train
from models.checkpoint import META_KEY, load_network, read_checkpoint
from models.net_module import NetModule
from utils.errors import UserError
from workflows.inference.evaluation import evaluate_checkpoint
from workflows.runs.metrics import METRIC_COLUMNS
from workflows.training.run import run_training

ROOT = Path(__file__).resolve().parent.parent
SECRET = "nep-secret-token-1234"
SUMMARY_KEYS = {
    "run_name",
    "architecture",
    "num_params",
    "epochs_run",
    "early_stopped",
    "best_epoch",
    "min_train_loss",
    "min_valid_loss",
    "max_train_acc",
    "max_valid_acc",
    "best_checkpoint",
}


def run_train_cli(
    tmp_path, data_path, *overrides: str, launcher: tuple[str, ...] = ()
) -> subprocess.CompletedProcess:
    """``python train.py`` in a fresh process, from ``tmp_path``, on the template config;
    ``launcher`` goes between the interpreter and the script (e.g. ``-m torch.distributed.run``)."""
    argv = _argv(tmp_path, data_path, *overrides)
    command = [sys.executable, *launcher, str(ROOT / "train.py"), *argv]
    return subprocess.run(command, capture_output=True, text=True, cwd=tmp_path, timeout=300)


def train_in_process(run_script, tmp_path, data_path, *overrides: str):
    """``run_train_cli``'s command run in this process: what it prints and writes, without
    paying a fresh interpreter."""
    return run_script(train, _argv(tmp_path, data_path, *overrides), cwd=tmp_path)


def _argv(tmp_path, data_path, *overrides: str) -> list[str]:
    config = tmp_path / "config.yml"
    config.write_text((ROOT / "config_template.yml").read_text())
    argv = ["-c", str(config), "-d", str(data_path), "--no-progress"]
    # The default MLflow store would sit beside the run folders these tests count.
    for item in ("log_to_mlflow=false", *overrides):
        argv += ["--set", item]
    return argv


def read_metrics(path):
    with path.open(newline="") as handle:
        reader = csv.DictReader(handle)
        return reader.fieldnames, list(reader)


def test_short_training_writes_every_run_file(fast_config):
    config = fast_config(f"neptune_api_token={SECRET}", "log_to_neptune=True")
    result = run_training(config, progress_bar=False)
    run = result.run_dir
    assert re.fullmatch(r"ghost_\d{14}", run.name)
    assert {p.name for p in run.iterdir()} >= {
        "config.yml",
        "metrics.csv",
        "summary.json",
        "checkpoints",
    }
    assert result.best_checkpoint.is_file() and result.last_checkpoint.is_file()

    columns, rows = read_metrics(result.metrics_csv)
    assert tuple(columns) == METRIC_COLUMNS
    assert [int(r["epoch"]) for r in rows] == [0, 1]
    for row in rows:
        assert 0.0 <= float(row["train_acc"]) <= 1.0 and 0.0 <= float(row["valid_acc"]) <= 1.0
        assert float(row["train_loss"]) > 0 and float(row["valid_loss"]) > 0
        assert float(row["lr"]) == pytest.approx(0.001)

    summary = json.loads((run / "summary.json").read_text())
    assert set(summary) >= SUMMARY_KEYS
    assert summary["epochs_run"] == 2 and summary["early_stopped"] is False
    assert summary["min_valid_loss"] == pytest.approx(min(float(r["valid_loss"]) for r in rows))
    assert summary["max_valid_acc"] == pytest.approx(max(float(r["valid_acc"]) for r in rows))
    assert summary["best_epoch"] == int(min(rows, key=lambda r: float(r["valid_loss"]))["epoch"])
    assert Path(summary["best_checkpoint"]) == result.best_checkpoint

    saved = yaml.safe_load((run / "config.yml").read_text())
    assert saved["neptune_api_token"] == "***" and saved["num_epochs"] == 2

    # The secret never lands in the run folder, checkpoints included.
    for path in run.rglob("*"):
        if path.is_file():
            assert SECRET.encode() not in path.read_bytes(), path

    # The best checkpoint is the epoch with the lowest valid_loss, and stands alone.
    ckpt = read_checkpoint(result.best_checkpoint)
    best_row = min(rows, key=lambda r: float(r["valid_loss"]))
    assert ckpt["epoch"] == int(best_row["epoch"])
    meta = ckpt[META_KEY]
    assert meta["architecture"] == "ghost" and meta["num_classes"] == 3
    assert meta["preprocessing"]["image_size"] == [64, 64] and len(meta["class_names"]) == 3
    assert meta["arch_options"] == {"dropout": 0.2, "out_channels": 320}
    assert meta["loss_function"] == "LabelSmoothingCrossEntropy"
    net, _ = load_network(result.best_checkpoint)
    assert net(torch.zeros(2, 3, 64, 64)).shape == (2, 3)


@pytest.mark.parametrize(
    "overrides",
    [
        ["lr_scheduler=ReduceLROnPlateau", "lr_scheduler_params={factor: 0.1, patience: 1}"],
        ["lr_scheduler=LambdaLR", "lr_scheduler_params={lr_lambda: 'lambda epoch: 0.5**epoch'}"],
        [
            "lr_scheduler=None",
            "optimizer=SGD",
            "optimizer_params={lr: 0.01, momentum: 0.9}",
            "loss_function=CrossEntropyLoss",
        ],
    ],
    ids=["plateau", "lambda", "sgd-no-scheduler"],
)
def test_schedulers_optimizers_and_losses_train(fast_config, overrides):
    result = run_training(fast_config(*overrides), progress_bar=False)
    _, rows = read_metrics(result.metrics_csv)
    assert len(rows) == 2
    if "lr_scheduler=LambdaLR" in overrides:
        assert [float(r["lr"]) for r in rows] == pytest.approx([0.001, 0.0005])
    # weights_only loading works whatever the scheduler stored in its state.
    assert read_checkpoint(result.last_checkpoint)["epoch"] == 1


def test_configure_optimizers_returns_dict_with_monitor():
    net = torch.nn.Linear(4, 3)
    module = NetModule(
        net,
        torch.nn.CrossEntropyLoss(),
        3,
        "AdamW",
        {"lr": 0.01},
        "ReduceLROnPlateau",
        {"patience": 2},
    )
    conf = module.configure_optimizers()
    assert isinstance(conf["optimizer"], torch.optim.AdamW)
    assert conf["lr_scheduler"]["monitor"] == "valid_loss"
    assert isinstance(conf["lr_scheduler"]["scheduler"], torch.optim.lr_scheduler.ReduceLROnPlateau)


def test_early_stopping_stops_and_is_recorded(fast_config):
    # lr 0 leaves the weights; plateau patience 1 gives early-stopping patience 3. BatchNorm's
    # running statistics still move, so valid_loss can creep down for some seeds (2 in 30):
    # this one's rises every epoch.
    config = fast_config(
        "seed=4",
        "num_epochs=6",
        "optimizer_params={lr: 0.0}",
        "lr_scheduler=ReduceLROnPlateau",
        "lr_scheduler_params={patience: 1}",
    )
    assert config.early_stopping_patience() == 3
    result = run_training(config, progress_bar=False)
    assert result.summary["early_stopped"] is True
    assert result.summary["epochs_run"] == 4  # best at epoch 0, then 3 epochs without improvement


def test_train_cli_trains_a_non_ghostnet_architecture(tmp_path, prepared_data, run_script):
    code, _, err = train_in_process(
        run_script,
        tmp_path,
        prepared_data,
        *("architecture=shuff_v2_x05", "dropout=null", "out_channels=null", "num_epochs=1"),
        *("image_size=[64,64]", "batch_size=6", "num_workers=0", "accelerator=cpu"),
        f"output_path={tmp_path / 'output'}",
        f"logging_dir={tmp_path / 'logs'}",
    )
    assert code == 0, err
    (run,) = (tmp_path / "output").glob("*_*[0-9]")
    assert run.name.startswith("shuff_v2_x05_")
    net, meta = load_network(run / "checkpoints" / "best.ckpt")
    assert meta.architecture == "shuff_v2_x05" and meta.arch_options == {}
    assert net(torch.zeros(1, 3, 64, 64)).shape == (1, 3)


@pytest.mark.slow
def test_train_cli_end_to_end_with_log_file(tmp_path, prepared_data, run_script):
    result = train_in_process(
        run_script,
        tmp_path,
        prepared_data,
        "num_epochs=1",
        "image_size=[48,48]",
        "batch_size=6",
        "num_workers=0",
        "accelerator=cpu",
    )
    assert result.code == 0, result.err[-2000:]
    runs = list((tmp_path / "output").iterdir())
    assert len(runs) == 1 and (runs[0] / "checkpoints" / "best.ckpt").is_file()
    assert f"Run folder: output/{runs[0].name}" in result.out
    logs = list((tmp_path / "logs").glob("*.log"))
    assert len(logs) == 1 and re.fullmatch(r"\d{8}\.log", logs[0].name)
    line = next(x for x in logs[0].read_text().splitlines() if "trainable parameters" in x)
    # time - logger name - level - PID - message, as the thesis's log files
    assert re.match(
        r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+ - workflows\.training(\.\w+)* - INFO - \d+ - run ",
        line,
    )


def test_unavailable_accelerator_is_a_user_error_and_leaves_no_run(fast_config, tmp_path):
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    with pytest.raises(UserError, match="accelerator 'gpu'"):
        run_training(fast_config("accelerator=gpu"), progress_bar=False)
    assert not any((tmp_path / "output").iterdir())


def test_corrupt_image_at_training_time_is_a_user_error(fast_config, prepared_data, tmp_path):
    data = tmp_path / "corrupt"
    shutil.copytree(prepared_data, data)
    victim = sorted((data / "train").iterdir())[0]
    victim.write_bytes(victim.read_bytes()[:40])
    config = fast_config(data_path=data)
    with pytest.raises(UserError, match=victim.name):
        run_training(config, progress_bar=False)


@pytest.mark.parametrize(
    "overrides, fragment",
    [
        (["image_augmentations={RandomErasing: {p: 1.0}}"], "image augmentations get PIL images"),
        (["loss_function=MSELoss"], "loss_function"),
        (
            ["architecture=sq_10", "dropout=null", "out_channels=null", "image_size=[16,16]"],
            "image_size",
        ),
    ],
    ids=["tensor-transform-on-pil", "loss-without-class-indices", "image-too-small"],
)
def test_settings_that_cannot_train_stop_before_any_folder(
    fast_config, tmp_path, overrides, fragment
):
    with pytest.raises(UserError, match=fragment):
        run_training(fast_config(*overrides), progress_bar=False)
    assert not (tmp_path / "output").exists() or not any((tmp_path / "output").iterdir())


@pytest.mark.parametrize("key", ["output_path", "logging_dir"])
def test_unwritable_output_folders_are_user_errors(tmp_path, prepared_data, key, run_script):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    result = train_in_process(
        run_script,
        tmp_path,
        prepared_data,
        f"{key}={blocker}",
        "num_epochs=1",
        "num_workers=0",
        "image_size=[32,32]",
    )
    assert result.code == 2, result.err[-2000:]
    assert f"key '{key}'" in result.err and "Traceback" not in result.err


def test_corrupt_image_read_by_a_loader_worker_is_one_line_error(
    tmp_path, prepared_data, run_script
):
    data = tmp_path / "corrupt"
    shutil.copytree(prepared_data, data)
    victim = sorted((data / "train").iterdir())[3]  # not one the preflight reads
    victim.write_bytes(victim.read_bytes()[:40])
    result = train_in_process(
        run_script,
        tmp_path,
        data,
        "num_epochs=1",
        "num_workers=1",
        "batch_size=4",
        "image_size=[32,32]",
        f"output_path={tmp_path / 'output'}",
        f"logging_dir={tmp_path / 'logs'}",
    )
    assert result.code == 2, result.err[-2000:]
    errors = [line for line in result.err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and victim.name in errors[0]
    assert "Traceback" not in result.err and "DataLoader worker" not in result.err
    assert not any((tmp_path / "output").iterdir())  # no epoch finished: no run kept
    # Lightning's own lines go through our handlers, into the day's log file too.
    log_text = next((tmp_path / "logs").glob("*.log")).read_text()
    assert "GPU available" in log_text


DDP_SETTINGS = (
    "num_epochs=1",
    "image_size=[32,32]",
    "batch_size=4",
    "num_workers=0",
    "accelerator=cpu",
    "devices=2",
)


def check_ddp_run(tmp_path, prepared_data, result) -> None:
    """One run folder, one report, and a valid_acc / valid_loss that evaluate.py repeats on
    the same checkpoint: the two processes counted each validation image exactly once."""
    assert result.returncode == 0, result.stderr[-3000:]
    runs = [p for p in (tmp_path / "output").iterdir() if not p.name.startswith(".")]
    assert len(runs) == 1
    _, rows = read_metrics(runs[0] / "metrics.csv")
    assert len(rows) == 1 and (runs[0] / "summary.json").is_file()
    assert result.stdout.count("Run folder:") == 1
    metrics = evaluate_checkpoint(runs[0], prepared_data, device="cpu")
    # 9 validation images on 2 processes: padding would have counted one of them twice.
    assert metrics["num_images"] == 9
    assert 0 < metrics["top1"] < 1  # so that one image counted twice would change it
    assert float(rows[0]["valid_acc"]) == pytest.approx(metrics["top1"], abs=1e-6)
    assert float(rows[0]["valid_loss"]) == pytest.approx(metrics["loss"], rel=1e-4)


@pytest.mark.slow
def test_two_process_ddp_on_cpu_shares_one_run_folder(tmp_path, prepared_data):
    # Lightning starts the second process by running the command again; it must join the
    # first one's run folder (multi-GPU runs take the same path with accelerator=gpu).
    result = run_train_cli(
        tmp_path,
        prepared_data,
        *DDP_SETTINGS,
        "seed=3",
        f"output_path={tmp_path / 'output'}",
        f"logging_dir={tmp_path / 'logs'}",
    )
    check_ddp_run(tmp_path, prepared_data, result)


@pytest.mark.slow
def test_torchrun_launch_on_cpu_trains_one_run(tmp_path, prepared_data):
    # torchrun starts both processes itself: they meet in one run folder through output_path.
    result = run_train_cli(
        tmp_path,
        prepared_data,
        *DDP_SETTINGS,
        "strategy=ddp",
        f"output_path={tmp_path / 'output'}",
        f"logging_dir={tmp_path / 'logs'}",
        launcher=("-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2"),
    )
    check_ddp_run(tmp_path, prepared_data, result)


@pytest.mark.slow
def test_a_two_process_run_resumes_with_two_processes(tmp_path, prepared_data):
    settings = (
        *DDP_SETTINGS,
        f"output_path={tmp_path / 'output'}",
        f"logging_dir={tmp_path / 'logs'}",
    )
    first = run_train_cli(tmp_path, prepared_data, *settings)
    assert first.returncode == 0, first.stderr[-3000:]
    config = tmp_path / "config.yml"  # run_train_cli's copy of the template
    command = [sys.executable, str(ROOT / "train.py"), "--resume", "last", "-c", str(config)]
    command += ["-d", str(prepared_data), "--no-progress"]
    for item in ("log_to_mlflow=false", *settings, "num_epochs=2"):
        command += ["--set", item]
    resumed = subprocess.run(command, capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    runs = [p for p in (tmp_path / "output").iterdir() if not p.name.startswith(".")]
    assert len(runs) == 1
    _, rows = read_metrics(runs[0] / "metrics.csv")
    assert [int(r["epoch"]) for r in rows] == [0, 1]
    assert json.loads((runs[0] / "summary.json").read_text())["epochs_run"] == 2
