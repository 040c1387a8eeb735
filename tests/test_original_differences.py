"""What README's "Differences from the original" says, held by tests: defaults equal to the
template (C-50's, bbox flags off), GhostNet-only options ignored for other networks, early
stopping 15 with a plateau scheduler, a fresh seed per run, loglevel NOTSET, the tracker
parameters the original sent to Neptune, the Colab notebook's default input path, the log line
format, the Neptune client package, the files that moved."""

from __future__ import annotations

import ast
import csv
import json
import logging
import os
import re
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest
import torch
import yaml

from configuration import TEMPLATE_PATH, Config, load_config, validate_config
from datasets import stanford_utils
from datasets.prepare import prepare_dataset
from models.arch_dict import build_network, count_parameters
from utils.logger import setup_logging
from workflows.runs.run_folder import RunFolder
from workflows.tracking.trackers import (
    NEPTUNE_DIR,
    NeptuneTracker,
    finish_trackers,
    start_trackers,
    thesis_params,
)
from workflows.training.run import run_training

REPO = Path(__file__).resolve().parent.parent


def _is_placeholder(value) -> bool:
    return isinstance(value, str) and value.startswith("<") and value.endswith(">")


def test_every_template_value_is_the_default():
    raw = yaml.safe_load(TEMPLATE_PATH.read_text(encoding="utf-8"))
    from_template = validate_config(raw).model_dump(mode="json")
    defaults = Config().model_dump(mode="json")
    written = {"out_channels" if key == "output_channels" else key for key in raw}
    compared = 0
    for key in sorted(written):
        if _is_placeholder(raw.get(key)) or key == "neptune_api_token":
            continue  # paths and accounts the user fills in
        assert from_template[key] == defaults[key], key
        compared += 1
    assert compared >= 30
    assert defaults["dropout"] == 0.2 and defaults["out_channels"] == 320


def test_default_network_is_the_best_model():
    config = Config()
    net = build_network(config.architecture, 196, config.img_channels, **config.arch_options())
    assert count_parameters(net) == 3_041_412


@pytest.mark.parametrize(
    ("params", "patience"),
    [({"factor": 0.1}, 15), (None, 15), ({"patience": 5}, 15), ({"patience": 2}, 6)],
)
def test_plateau_early_stopping_patience(params, patience):
    config = Config(lr_scheduler="ReduceLROnPlateau", lr_scheduler_params=params)
    assert config.early_stopping_patience() == patience


def test_loglevel_notset_is_accepted_and_logs_everything(tmp_path):
    config = Config(loglevel="NOTSET")
    assert Config(loglevel="notset").loglevel == "NOTSET"
    root = logging.getLogger()
    level = root.level
    try:
        log_file = setup_logging(tmp_path / "logs", config.loglevel)
        logging.getLogger("cars.test").debug("a debug line")
        for handler in root.handlers:
            handler.flush()
        assert "a debug line" in log_file.read_text(encoding="utf-8")
    finally:
        for handler in [h for h in root.handlers if isinstance(h, logging.FileHandler)]:
            if str(tmp_path) in getattr(handler, "baseFilename", ""):
                root.removeHandler(handler)
                handler.close()
        root.setLevel(level)


def _losses(run_dir) -> list[str]:
    with open(run_dir / "metrics.csv", newline="", encoding="utf-8") as file:
        return [row["train_loss"] for row in csv.DictReader(file)]


@pytest.mark.slow
def test_fresh_seed_per_run_is_recorded_and_repeats_the_run(fast_config):
    template = yaml.safe_load(TEMPLATE_PATH.read_text(encoding="utf-8"))
    trackers_off = tuple(f"{key}=false" for key in template if key.startswith("log_to_"))
    tiny = ("num_epochs=1", "image_size=[32,32]", *trackers_off)
    first = run_training(fast_config(*tiny), progress_bar=False)
    second = run_training(fast_config(*tiny), progress_bar=False)
    seeds = []
    for result in (first, second):
        recorded = yaml.safe_load(result.run.config_yml.read_text(encoding="utf-8"))["seed"]
        summary = json.loads(result.run.summary_json.read_text(encoding="utf-8"))
        assert isinstance(recorded, int) and summary["seed"] == recorded
        seeds.append(recorded)
    assert seeds[0] != seeds[1]
    assert _losses(first.run_dir) != _losses(second.run_dir)
    again = run_training(fast_config(*tiny, f"seed={seeds[0]}"), progress_bar=False)
    assert _losses(again.run_dir) == _losses(first.run_dir)
    assert json.loads(again.run.summary_json.read_text(encoding="utf-8"))["seed"] == seeds[0]


def test_template_with_another_architecture_loads_with_one_warning(tmp_path, caplog):
    config_file = tmp_path / "config.yml"
    config_file.write_text(TEMPLATE_PATH.read_text(encoding="utf-8"), encoding="utf-8")
    with caplog.at_level(logging.WARNING):
        config = load_config(config_file, ["architecture=shuff_v2_x05"])
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "dropout" in warnings[0].getMessage() and "output_channels" in warnings[0].getMessage()
    net = build_network(config.architecture, 5, config.img_channels, **config.arch_options())
    assert count_parameters(net) > 0


def _neptune_parameters(run_dir) -> dict:
    """The parameters in the Neptune client's offline operation files of ``run_dir``."""
    params = {}
    for log_file in (run_dir / NEPTUNE_DIR).rglob("data-*.log"):
        for line in log_file.read_text(encoding="utf-8").splitlines():
            op = json.loads(line)["obj"]
            path = op.get("path", [])
            if path[:1] == ["parameters"]:
                params[path[1]] = op.get("value")
    return params


def test_neptune_gets_the_originals_architecture_name_and_weight_decay(tmp_path):
    # C-1's settings: Adam with only a learning rate; the thesis's log reads
    # 'architecture': 'GhostNet' and 'weight_decay': 0.0 (thesis_experiments.txt).
    config = Config(
        optimizer="Adam", optimizer_params={"lr": 0.001}, lr_scheduler=None, log_to_neptune=True
    )
    run = RunFolder(tmp_path / "ghost_20200917224346")
    run.path.mkdir()
    trackers = [NeptuneTracker(config)]
    start_trackers(trackers, config, run, 4_153_092, "colab")
    finish_trackers(trackers, run, {"epochs_run": 0})
    params = _neptune_parameters(run.path)
    assert params["architecture"] == "GhostNet" and params["weight_decay"] == 0.0
    assert params["learning_rate"] == 0.001 and params["optimizer"] == "Adam"


@pytest.mark.parametrize(
    ("key", "logged"),
    [
        ("eff_b0", "EfficientNet_b0"),
        ("sqnxt_1v5", "SqueezeNext23_10_v5"),
        ("hard_39dw", "HarDNet_39dw"),
    ],
)
def test_every_architecture_is_logged_by_the_originals_builder_name(key, logged):
    config = Config(architecture=key, dropout=None, out_channels=None)
    params = thesis_params(config, 1, "local")
    assert params["architecture"] == logged
    assert params["weight_decay"] == 0.6  # the template's, set: logged as it is


def _notebook_setting(notebook: Path, name: str):
    """The literal that the cell tagged ``parameters`` assigns to ``name``."""
    cells = json.loads(notebook.read_text(encoding="utf-8"))["cells"]
    (settings,) = [c for c in cells if "parameters" in c["metadata"].get("tags", [])]
    tree = ast.parse("".join(settings["source"]))
    (value,) = [
        node.value
        for node in tree.body
        if isinstance(node, ast.Assign) and [t.id for t in node.targets] == [name]
    ]
    return ast.literal_eval(value)


def test_colab_notebook_trains_on_the_thesis_input_path_by_default_like_train_py():
    assert _notebook_setting(REPO / "train_colab.ipynb", "FAST_INPUT") is False
    defaults = Config()  # train.py's: the template's values
    assert defaults.cache_images is False and defaults.augment_on == "cpu"


# The parameters Neptune holds for C-50, the thesis's best run (thesis_experiments.txt), as
# Neptune returned them: numbers as floats, everything else as text.
C50_LOGGED = {
    "all_optimizer_params": "{'lr': 0.001, 'weight_decay': 0.6}",
    "architecture": "GhostNet",
    "augment_images": "True",
    "augment_tensors": "False",
    "batch_size": 64.0,
    "crop_to_bboxes": "False",
    "dropout": 0.2,
    "erase_background": "False",
    "grayscale": "False",
    "image_augmentations": "{'RandomHorizontalFlip': {'p': 0.5}, 'RandomAffine': {'degrees': 25, "
    "'translate': [0.1, 0.1], 'scale': [0.9, 1.1], 'shear': 8}, 'ColorJitter': {'brightness': "
    "0.2, 'contrast': 0.2, 'saturation': 0.2, 'hue': 0.1}}",
    "img_size": "[227, 227]",
    "learning_rate": 0.001,
    "loss_function": "LabelSmoothingCrossEntropy",
    "loss_params": "None",
    "lr_scheduler": "MultiStepLR",
    "lr_scheduler_params": "{'gamma': 0.1, 'milestones': [67, 82, 95, 107]}",
    "max_num_epochs": 200.0,
    "norm_params_gray": "None",
    "norm_params_rgb": "{'mean': [0.4707, 0.4602, 0.455], 'std': [0.2594, 0.2585, 0.2635]}",
    "normalize": "True",
    "num_params": 3041412.0,
    "optimizer": "AdamW",
    "out_channels": 320.0,
    "runtime": "colab",
    "tensor_augmentations": "None",
    "weight_decay": 0.6,
}


def _as_neptune_returned(value):
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    return str(value)


def test_the_template_logs_c50s_parameters_bbox_flags_off_included():
    config = load_config(TEMPLATE_PATH, [])
    assert config.crop_to_bboxes is False and config.erase_background is False  # C-50's
    net = build_network(config.architecture, 196, config.img_channels, **config.arch_options())
    params = thesis_params(config, count_parameters(net), "colab")
    assert {k: _as_neptune_returned(v) for k, v in params.items()} == C50_LOGGED


def test_log_lines_have_one_format_in_the_file_and_on_the_console(tmp_path, capsys):
    root = logging.getLogger()
    level = root.level
    try:
        log_file = setup_logging(tmp_path / "logs", "INFO")
        logging.getLogger("cars.test").info("a line")
        for handler in root.handlers:
            handler.flush()
        expected = re.compile(
            rf"^\d{{4}}-\d\d-\d\d \d\d:\d\d:\d\d,\d{{3}} - cars\.test - INFO - {os.getpid()} - a line$"
        )
        (in_file,) = log_file.read_text(encoding="utf-8").splitlines()[-1:]
        assert expected.match(in_file), in_file
        on_console = [line for line in capsys.readouterr().err.splitlines() if "a line" in line]
        assert on_console and all(expected.match(line) for line in on_console), on_console
    finally:
        for handler in [h for h in root.handlers if isinstance(h, logging.FileHandler)]:
            if str(tmp_path) in getattr(handler, "baseFilename", ""):
                root.removeHandler(handler)
                handler.close()
        root.setLevel(level)


def test_the_neptune_client_is_the_pinned_neptune_client_package_and_warns_on_import():
    assert metadata.version("neptune-client").startswith("1.14")
    done = subprocess.run(
        [sys.executable, "-c", "import neptune"], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0
    assert "NeptuneDeprecationWarning" in done.stderr and "neptune-client" in done.stderr


def test_the_moved_files_and_the_preparation_function():
    assert stanford_utils.prepare_dataset is prepare_dataset  # under the thesis's module name
    for name in ("mobilenet_v2", "shufflenet_v2"):
        assert (REPO / "models" / "architectures" / f"{name}.py").is_file()
    assert (REPO / "configuration" / "__init__.py").is_file()
    assert not (REPO / "utils" / "configuration.py").exists()
    assert build_network("hard_39", 5)(torch.randn(1, 3, 227, 227)).shape == (1, 5)
