"""Starting a run from a trained checkpoint (init_from, train.py --init-from) and freezing the
features for the first epochs (freeze_epochs)."""

from __future__ import annotations

import csv
import json
import logging
import shutil
from pathlib import Path

import onnx
import pytest
import torch
import yaml

import train
from configuration import TEMPLATE_PATH, load_config
from datasets.prepare import prepare_dataset
from datasets.sample_data import make_sample_photos
from models.arch_dict import build_network
from models.checkpoint import load_network, read_checkpoint
from models.transfer import class_dependent_names
from utils.errors import UserError
from workflows.inference.evaluation import evaluate_checkpoint
from workflows.inference.export import app_metadata, export_checkpoint
from workflows.inference.prediction import predict_paths
from workflows.training.fine_tuning import _new_head, output_layer, resolve_init_from
from workflows.training.resume import load_resume_config
from workflows.training.run import run_training

PHOTO_CLASSES = ("Cab", "Van")
GHOST_HEAD = {"classifier.4.weight", "classifier.4.bias"}


def config_for(out: Path, data: Path, *overrides: str):
    """A config that trains GhostNet on 48-pixel images in seconds."""
    return load_config(
        TEMPLATE_PATH,
        [
            "num_epochs=1",
            "image_size=[48,48]",
            "batch_size=4",
            "num_workers=0",
            "accelerator=cpu",
            "augment_images=false",
            "log_to_mlflow=false",
            "seed=3",
            f"output_path={out / 'output'}",
            f"logging_dir={out / 'logs'}",
            *overrides,
        ],
        data_path=str(data),
    )


def net_weights(checkpoint: Path) -> dict[str, torch.Tensor]:
    state = read_checkpoint(checkpoint)["state_dict"]
    return {k.removeprefix("net."): v for k, v in state.items() if k.startswith("net.")}


def features_equal(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    """Every weight and statistic outside the output layer is the same."""
    names = set(a) - GHOST_HEAD
    assert names == set(b) - GHOST_HEAD
    return all(torch.equal(a[name], b[name]) for name in names)


@pytest.fixture(scope="module")
def tmp(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("fine_tuning")


@pytest.fixture(scope="module")
def source(tmp, prepared_data) -> Path:
    """A checkpoint trained for 6 epochs on the 3 sample classes (a learning rate that learns
    them in so few steps)."""
    config = config_for(
        tmp / "source",
        prepared_data,
        "num_epochs=6",
        "optimizer_params={lr: 0.01, weight_decay: 0.0}",
    )
    return run_training(config, progress_bar=False).last_checkpoint


@pytest.fixture(scope="module")
def photos(tmp) -> Path:
    """A prepared photo folder of 2 other classes (3 train and 3 test images each)."""
    raw = make_sample_photos(tmp / "photos", PHOTO_CLASSES, per_class=6)
    prepare_dataset(raw, tmp / "photos_prepared", progress=False)
    return tmp / "photos_prepared"


@pytest.fixture(scope="module")
def frozen_run(tmp, source, photos):
    """One epoch on the photos from the checkpoint, features frozen, through train.py."""
    argv = ["-c", str(TEMPLATE_PATH), "-d", str(photos), "--no-progress"]
    for override in (
        "num_epochs=1",
        "freeze_epochs=1",
        "image_size=[227,227]",  # the default: the checkpoint's 48x48 is taken instead
        "batch_size=4",
        "num_workers=0",
        "accelerator=cpu",
        "augment_images=false",
        "log_to_mlflow=false",
        "seed=3",
        f"output_path={tmp / 'frozen' / 'output'}",
        f"logging_dir={tmp / 'frozen' / 'logs'}",
    ):
        argv += ["--set", override]
    assert train.main([*argv, "--init-from", str(source)]) == 0
    (run_dir,) = (tmp / "frozen" / "output").iterdir()
    return run_dir


@pytest.mark.parametrize(
    "architecture", ["ghost", "mob_v2", "sq_11", "shuff_v2_x05", "hard_39dw", "sqnxt_1", "eff_b0"]
)
def test_the_output_layer_is_found_for_every_kind_of_head(architecture):
    head = class_dependent_names(architecture)
    net = build_network(architecture, 5)
    state = net.state_dict()
    assert head and all(state[name].shape[0] == 5 for name in head)
    if architecture == "ghost":
        assert head == GHOST_HEAD


def test_new_classes_keep_the_features_and_renew_the_output_layer(tmp, source, photos):
    config, start = resolve_init_from(config_for(tmp / "t", photos, f"init_from={source}"))
    net = build_network("ghost", 2, 3, **config.arch_options())
    fresh = {k: v.clone() for k, v in net.state_dict().items()}
    transfer = start.initialise(net, list(PHOTO_CLASSES), output_layer(config))
    assert sorted(transfer.reinitialised) == sorted(GHOST_HEAD)
    assert not transfer.mismatched and not transfer.missing
    weights, theirs = net.state_dict(), net_weights(source)
    assert features_equal(weights, theirs)
    assert all(torch.equal(weights[name], fresh[name]) for name in GHOST_HEAD)
    assert weights["classifier.4.weight"].shape[0] == 2

    # Same classes: the output layer is kept too.
    same = build_network("ghost", 3, 3, **config.arch_options())
    start.initialise(same, start.meta.class_names, output_layer(config))
    assert all(torch.equal(same.state_dict()[k], v) for k, v in theirs.items())


def test_frozen_first_epoch_keeps_the_features_and_records_the_start(frozen_run, source):
    summary = json.loads((frozen_run / "summary.json").read_text(encoding="utf-8"))
    assert summary["init_from"] == str(source)
    assert summary["freeze_epochs"] == 1
    assert sorted(summary["init_from_weights"]["reinitialised"]) == sorted(GHOST_HEAD)
    saved = yaml.safe_load((frozen_run / "config.yml").read_text(encoding="utf-8"))
    assert saved["init_from"] == str(source)
    assert saved["image_size"] == [48, 48]  # from the checkpoint

    trained = net_weights(frozen_run / "checkpoints" / "last.ckpt")
    assert features_equal(trained, net_weights(source))
    ckpt = read_checkpoint(frozen_run / "checkpoints" / "last.ckpt")
    assert ckpt["cars"]["class_names"] == list(PHOTO_CLASSES)
    assert ckpt["cars"]["preprocessing"]["image_size"] == [48, 48]


def test_features_train_after_the_frozen_epochs(tmp, source, photos):
    config = config_for(
        tmp / "unfrozen",
        photos,
        "num_epochs=3",
        "freeze_epochs=1",
        f"init_from={source}",
        "lr_scheduler=LambdaLR",
        "lr_scheduler_params={lr_lambda: 'lambda epoch: 0.5**epoch'}",
    )
    result = run_training(config, progress_bar=False)
    assert not features_equal(net_weights(result.last_checkpoint), net_weights(source))
    assert len(result.summary["init_from_weights"]["reinitialised"]) == 2
    # The unfrozen layers joined as a second group that follows the same schedule.
    head, features = read_checkpoint(result.last_checkpoint)["optimizer_states"][0]["param_groups"]
    assert features["lr"] == head["lr"] < 0.001 * 0.5  # stepped after the group joined
    assert len(features["params"]) > 10 * len(head["params"])


def test_starting_from_a_checkpoint_of_the_same_images_learns_faster(tmp, source, prepared_data):
    scratch = run_training(config_for(tmp / "scratch", prepared_data), progress_bar=False)
    started = run_training(
        config_for(tmp / "started", prepared_data, f"init_from={source}"), progress_bar=False
    )
    assert started.summary["init_from_weights"]["reinitialised"] == []  # same classes
    assert started.summary["min_valid_loss"] < scratch.summary["min_valid_loss"]


def test_fine_tuned_checkpoint_evaluates_and_predicts_the_new_classes(tmp, frozen_run, photos):
    checkpoint = frozen_run / "checkpoints" / "best.ckpt"
    metrics = evaluate_checkpoint(checkpoint, photos, out_dir=tmp / "evaluation")
    assert metrics["num_classes"] == 2 and metrics["num_images"] == 6
    with (tmp / "evaluation" / "per_class.csv").open(newline="", encoding="utf-8") as handle:
        assert {row["class_name"] for row in csv.DictReader(handle)} == set(PHOTO_CLASSES)

    results, failures = predict_paths(checkpoint, [photos / "test"], top_k=2, device="cpu")
    assert not failures and len(results) == 6
    assert all({p["class_name"] for p in r["predictions"]} == set(PHOTO_CLASSES) for r in results)
    metadata = app_metadata(load_network(checkpoint)[1])  # what an export carries
    assert json.loads(metadata["class_names"]) == list(PHOTO_CLASSES)


@pytest.mark.slow
def test_fine_tuned_checkpoint_exports_to_onnx_with_the_new_classes(tmp, frozen_run):
    checkpoint = frozen_run / "checkpoints" / "best.ckpt"
    report = export_checkpoint(checkpoint, output=tmp / "cars.onnx", latency_runs=1)
    metadata = {p.key: p.value for p in onnx.load(str(report.path)).metadata_props}
    assert json.loads(metadata["class_names"]) == list(PHOTO_CLASSES)
    assert json.loads(metadata["image_size"]) == [48, 48]


@pytest.mark.parametrize(
    ("override", "named"),
    [("architecture=mob_v2", "architecture is 'mob_v2'"), ("dropout=0.5", "dropout is 0.5")],
)
def test_config_contradicting_the_checkpoint_names_the_key(tmp, source, photos, override, named):
    config = config_for(tmp / "c", photos, f"init_from={source}", override)
    with pytest.raises(UserError, match="contradicts the checkpoint") as err:
        resolve_init_from(config)
    assert named in str(err.value)


def test_preprocessing_defaults_to_the_checkpoint_and_overrides_warn(tmp, source, photos, caplog):
    taken, _ = resolve_init_from(
        config_for(tmp / "p", photos, f"init_from={source}", "image_size=[227,227]")
    )
    assert taken.image_size == [48, 48]
    with caplog.at_level(logging.WARNING):
        kept, _ = resolve_init_from(
            config_for(tmp / "p", photos, f"init_from={source}", "image_size=[56,56]")
        )
    assert kept.image_size == [56, 56]
    assert "image_size is [56, 56] in the config" in caplog.text


def test_freeze_without_init_from_and_missing_checkpoint_are_user_errors(tmp, photos):
    with pytest.raises(UserError, match="freeze_epochs is 2 but init_from is not set"):
        resolve_init_from(config_for(tmp / "f", photos, "freeze_epochs=2"))
    with pytest.raises(UserError, match="does not exist"):
        resolve_init_from(config_for(tmp / "f", photos, f"init_from={tmp / 'nope.ckpt'}"))
    with pytest.raises(UserError, match="init_from.*empty; give a checkpoint"):
        config_for(tmp / "f", photos, "init_from=''")


def test_a_run_folder_starts_from_its_best_checkpoint(tmp, source, photos):
    _, start = resolve_init_from(config_for(tmp / "r", photos, f"init_from={source.parent.parent}"))
    assert start.path == source.parent / "best.ckpt"


def test_the_log_says_why_the_output_layer_is_new():
    assert _new_head(["a", "b", "c"], ["a", "b"]) == (
        "; the output layer is new, for 3 classes (the checkpoint has 2)"
    )
    assert "named otherwise than the checkpoint's" in _new_head(["a", "x"], ["a", "b"])


def test_a5_resuming_a_fine_tuned_run_refuses_a_new_freeze_epochs_and_needs_no_source(
    tmp, source, photos, tmp_path, monkeypatch
):
    """Issue 23, A.5: a changed freeze_epochs crashed with a traceback after rewriting the run's
    config.yml and summary.json; a resume refused once the init_from checkpoint had moved."""
    moved = tmp_path / "src.ckpt"
    shutil.copy(source, moved)
    config = config_for(tmp_path, photos, f"init_from={moved}", "freeze_epochs=1")
    run = run_training(config, progress_bar=False).run
    moved.unlink()  # resuming needs the run's own checkpoint only
    monkeypatch.chdir(tmp_path)
    before = {name: (run.path / name).read_bytes() for name in ("config.yml", "summary.json")}
    config, point = load_resume_config(
        str(run.path), None, ["num_epochs=2", "freeze_epochs=0"], None
    )
    with pytest.raises(UserError, match="changes freeze_epochs"):
        run_training(config, progress_bar=False, resume=point)
    assert {name: (run.path / name).read_bytes() for name in before} == before
    config, point = load_resume_config(str(run.path), None, ["num_epochs=2"], None)
    resumed = run_training(config, progress_bar=False, resume=point)
    assert resumed.summary["epochs_run"] == 2 and resumed.summary["init_from"] == str(moved)
    assert resumed.summary["freeze_epochs"] == 1
