import subprocess
import sys
from pathlib import Path

import pytest
import yaml

import train
from configuration import (
    TEMPLATE_PATH,
    apply_overrides,
    configured_output_path,
    load_config,
    validate_config,
)
from datasets.preprocessing import Augmentation
from utils.errors import UserError

ROOT = Path(__file__).resolve().parent.parent
THESIS_LISTING = Path(__file__).parent / "data" / "thesis_listing_3_3.yml"


def template_dict() -> dict:
    return yaml.safe_load(TEMPLATE_PATH.read_text())


def config_error(raw: dict) -> str:
    with pytest.raises(UserError) as info:
        validate_config(raw, source="config.yml")
    return str(info.value)


def test_thesis_listing_loads_unchanged():
    config = load_config(THESIS_LISTING)
    assert config.out_channels == 320
    assert config.lr_scheduler == "ReduceLROnPlateau"
    assert config.loss_params is None
    assert config.crop_to_bboxes and config.erase_background
    augmentations = config.augmentations()
    assert [a.name for a in augmentations if not a.on_tensor] == [
        "RandomHorizontalFlip",
        "RandomAffine",
        "ColorJitter",
    ]
    assert [a for a in augmentations if a.on_tensor] == [
        Augmentation("RandomErasing", {"p": 0.5, "scale": [0.02, 0.25]}, on_tensor=True)
    ]
    # Thesis: early stopping patience is 3x the plateau scheduler's patience.
    assert config.early_stopping_patience() == 15


def test_template_is_the_best_model_c50():
    config = load_config(TEMPLATE_PATH)
    assert config.image_size == [227, 227]
    assert not config.crop_to_bboxes and not config.erase_background
    assert config.augment_images and not config.augment_tensors
    assert config.active_norm_params().mean == [0.4707, 0.4602, 0.4550]
    assert config.architecture == "ghost" and config.batch_size == 64 and config.num_epochs == 200
    assert config.arch_options() == {"dropout": 0.2, "out_channels": 320}
    assert config.optimizer == "AdamW"
    assert config.optimizer_params == {"lr": 0.001, "weight_decay": 0.6}
    assert config.lr_scheduler == "MultiStepLR"
    assert config.lr_scheduler_params == {"gamma": 0.1, "milestones": [67, 82, 95, 107]}
    assert config.loss_function == "LabelSmoothingCrossEntropy"
    assert config.early_stopping_patience() == 15
    # seed None: a fresh seed per run, recorded in the run folder
    assert (config.num_workers, config.accelerator, config.devices, config.seed) == (
        None,
        "auto",
        "auto",
        None,
    )


def test_both_spellings_of_out_channels_are_one_setting():
    raw = template_dict()
    raw.pop("output_channels")
    raw["out_channels"] = 640
    assert validate_config(raw).out_channels == 640
    raw["output_channels"] = 320
    assert "one setting" in config_error(raw)


def test_override_replaces_either_spelling():
    assert (
        validate_config(apply_overrides(template_dict(), ["out_channels=1280"])).out_channels
        == 1280
    )


def test_overrides_parse_yaml_and_reach_into_mappings():
    raw = apply_overrides(
        template_dict(),
        [
            "image_size=[64,64]",
            "optimizer_params.weight_decay=0.3",
            "lr_scheduler=None",
            "loss_params.epsilon=0.2",
        ],
    )
    config = validate_config(raw)
    assert config.image_size == [64, 64]
    assert config.optimizer_params == {"lr": 0.001, "weight_decay": 0.3}
    assert config.lr_scheduler is None
    assert config.loss_params == {"epsilon": 0.2}


@pytest.mark.parametrize("item", ["batch_size", "=3", "image_size=[1,"])
def test_bad_override_is_a_user_error(item):
    with pytest.raises(UserError, match="--set"):
        apply_overrides({}, [item])


@pytest.mark.parametrize(
    "change, expected",
    [
        ({"batch_sise": 32}, ["unknown key 'batch_sise'", "did you mean 'batch_size'"]),
        ({"batch_size": "abc"}, ["key 'batch_size'", "'abc'"]),
        ({"batch_size": 0}, ["key 'batch_size'", "greater than 0"]),
        ({"num_epochs": -1}, ["key 'num_epochs'"]),
        ({"dropout": 1.5}, ["key 'dropout'"]),
        ({"image_size": [227]}, ["key 'image_size'"]),
        ({"image_size": [2, 2]}, ["key 'image_size'", "at least 8"]),
        ({"loglevel": "LOUD"}, ["key 'loglevel'"]),
        ({"optimizer": "Adamw"}, ["key 'optimizer'", "did you mean 'AdamW'"]),
        ({"optimizer": "os"}, ["key 'optimizer'", "not an optimizer"]),
        ({"lr_scheduler": "MultiStepLr"}, ["key 'lr_scheduler'", "did you mean 'MultiStepLR'"]),
        ({"loss_function": "CrossEntropy"}, ["key 'loss_function'", "did you mean"]),
        ({"loss_function": "Module"}, ["key 'loss_function'"]),
        (
            {"architecture": "ghostnet"},
            ["key 'architecture'", "did you mean 'ghost'", "sq_10", "shuff_v2_x20"],
        ),
        (
            {"image_augmentations": {"RandomAfine": {"degrees": 3}}},
            ["image_augmentations", "did you mean 'RandomAffine'"],
        ),
        ({"image_augmentations": {"Compose": {}}}, ["image_augmentations", "Compose"]),
        (
            {"image_augmentations": {"RandomAffine": {"degres": 3}}},
            ["image_augmentations", "RandomAffine", "degres"],
        ),
        (
            {"tensor_augmentations": {"RandomErasing": {"p": 7}}},
            ["tensor_augmentations", "RandomErasing"],
        ),
        (
            {"normalization_params_rgb": {"mean": [0.5], "std": [0.5]}},
            ["normalization_params_rgb", "3 value(s)"],
        ),
        (
            {"normalization_params_grayscale": {"mean": [0.5, 0.5, 0.5], "std": [1, 1, 1]}},
            ["normalization_params_grayscale", "1 value(s)"],
        ),
        (
            {"normalization_params_rgb": {"mean": [0.5, 0.5, 0.5], "std": [0.5, 0, 0.5]}},
            ["normalization_params_rgb", "std"],
        ),
        ({"optimizer_params": {"lr": -1}}, ["optimizer_params", "AdamW"]),
        ({"optimizer_params": {"learning_rate": 0.1}}, ["optimizer_params", "learning_rate"]),
        (
            {"lr_scheduler_params": {"gama": 0.1, "milestones": [2]}},
            ["lr_scheduler_params", "gama"],
        ),
        ({"loss_params": {"epsilon": 2}}, ["loss_params", "LabelSmoothingCrossEntropy"]),
        ({"accelerator": "tpu-pod"}, ["key 'accelerator'"]),
        ({"num_workers": -2}, ["key 'num_workers'"]),
    ],
)
def test_each_kind_of_config_error_names_the_key(change, expected):
    raw = template_dict()
    raw.update(change)
    message = config_error(raw)
    for fragment in expected:
        assert fragment in message
    assert "config.yml" in message


def test_scheduler_without_params_does_not_inherit_defaults():
    config = validate_config(
        {"lr_scheduler": "ExponentialLR", "lr_scheduler_params": {"gamma": 0.9}}
    )
    assert config.lr_scheduler_params == {"gamma": 0.9}
    message = config_error(
        {"lr_scheduler": "ReduceLROnPlateau", "lr_scheduler_params": {"milestones": [3]}}
    )
    assert "milestones" in message


def test_lambda_scheduler_strings_validate_without_eval():
    raw = template_dict() | {
        "lr_scheduler": "LambdaLR",
        "lr_scheduler_params": {"lr_lambda": "lambda epoch: pow(0.0001/0.001, 1/67)**epoch"},
    }
    assert validate_config(raw).lr_scheduler == "LambdaLR"
    raw["lr_scheduler"] = "MultiplicativeLR"
    raw["lr_scheduler_params"] = {"lr_lambda": "lambda epoch: 0.955**epoch"}
    assert validate_config(raw).lr_scheduler == "MultiplicativeLR"
    raw["lr_scheduler_params"] = {
        "lr_lambda": "lambda epoch: __import__('os').system('touch /tmp/pwned')"
    }
    assert "lr_lambda" in config_error(raw)


def test_ghost_only_options_ignored_for_other_architectures(caplog):
    raw = template_dict() | {"architecture": "mob_v2"}
    with caplog.at_level("WARNING", logger="configuration.loading"):
        config = validate_config(raw, source="config.yml")
    assert config.arch_options() == {}
    (warning,) = caplog.records
    assert "dropout, output_channels ignored" in warning.getMessage()
    assert "mob_v2" in warning.getMessage() and "ghost" in warning.getMessage()
    caplog.clear()
    raw.pop("dropout")
    raw.pop("output_channels")
    assert validate_config(raw).arch_options() == {}
    assert not caplog.records  # defaults the user did not write are not worth a warning


def test_secret_is_redacted_everywhere_it_could_leak():
    raw = template_dict() | {"neptune_api_token": "s3cr3t-token", "batch_size": "bad"}
    message = config_error(raw)
    assert "s3cr3t" not in message
    raw["batch_size"] = 8
    config = validate_config(raw)
    assert "s3cr3t" not in repr(config)
    assert config.to_public_dict()["neptune_api_token"] == "***"
    assert "s3cr3t" not in yaml.safe_dump(config.to_public_dict())


def test_missing_config_says_to_copy_the_template(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UserError, match="cp config_template.yml config.yml"):
        load_config("config.yml")


@pytest.mark.parametrize("text", ["a: [1, 2", "- just\n- a list\n"])
def test_unreadable_config_is_a_user_error(tmp_path, text):
    path = tmp_path / "bad.yml"
    path.write_text(text)
    with pytest.raises(UserError, match="bad.yml"):
        load_config(path)


def test_data_path_argument_overrides_config():
    assert (
        load_config(TEMPLATE_PATH, data_path="/tmp/elsewhere").stanford_data_path
        == "/tmp/elsewhere"
    )


def test_train_cli_config_error_exits_2_without_traceback(tmp_path, run_script):
    bad = tmp_path / "config.yml"
    bad.write_text(TEMPLATE_PATH.read_text().replace("batch_size: 64", "batch_size: many"))
    code, _, err = run_script(train, ["-c", str(bad)], cwd=tmp_path)
    assert code == 2
    assert "batch_size" in err and "Traceback" not in err
    bad.unlink()
    code, _, err = run_script(train, [], cwd=tmp_path)
    assert code == 2 and "config_template.yml" in err


# Imported only on the paths that use them (benchmarks/startup.py times what this checks).
HEAVY = ("torchvision", "kornia", "pytorch_lightning", "matplotlib", "optuna", "mlflow", "onnx")


def test_a_config_mistake_is_reported_without_importing_the_workflow(tmp_path):
    """In a fresh interpreter, as a user runs it: what is imported is the point."""
    bad = tmp_path / "config.yml"
    bad.write_text(TEMPLATE_PATH.read_text() + "\nnot_a_setting: 1\n")
    script = (
        "import sys, train\n"
        "from utils.errors import run_cli\n"
        "try:\n"
        f"    run_cli(lambda: train.main(['-c', {str(bad)!r}]))\n"
        "except SystemExit as stop:\n"
        f"    print(stop.code, sorted(m for m in {HEAVY!r} if m in sys.modules))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert "unknown key 'not_a_setting'" in done.stderr
    assert done.stdout.split() == ["2", "[]"], done.stdout + done.stderr


def test_scientific_notation_is_a_number():
    config = validate_config(
        apply_overrides(template_dict(), ["optimizer_params={lr: 1e-3, weight_decay: 5e-1}"])
    )
    assert config.optimizer_params == {"lr": 0.001, "weight_decay": 0.5}


def test_template_file_with_scientific_notation_loads(tmp_path):
    path = tmp_path / "config.yml"
    path.write_text(TEMPLATE_PATH.read_text().replace("lr: 0.001", "lr: 1e-3"))
    assert load_config(path).optimizer_params["lr"] == 0.001


@pytest.mark.parametrize(
    "change, fragment",
    [
        ({"seed": -1}, "key 'seed'"),
        (
            {"lr_scheduler": "ReduceLROnPlateau", "lr_scheduler_params": {"patience": "abc"}},
            "patience",
        ),
        (
            {
                "image_augmentations": {
                    "LinearTransformation": {"transformation_matrix": [[1]], "mean_vector": [0]}
                }
            },
            "LinearTransformation",
        ),
    ],
)
def test_values_that_would_fail_later_are_rejected_now(change, fragment):
    raw = template_dict()
    raw.update(change)
    assert fragment in config_error(raw)


def test_the_schedule_check_takes_any_torch_optimizer_and_warns_nothing(recwarn):
    # LBFGS steps only with a closure: the check steps the scheduler alone
    config = load_config(TEMPLATE_PATH, ["optimizer=LBFGS", "optimizer_params={lr: 0.1}"])
    assert config.optimizer == "LBFGS"
    assert not [w for w in recwarn if "lr_scheduler.step()" in str(w.message)]


def test_output_path_without_c_ignores_a_broken_config_yml(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert configured_output_path() is None  # no config.yml: the caller's default
    (tmp_path / "config.yml").write_text("output_path: elsewhere\n")
    assert configured_output_path() == "elsewhere"
    (tmp_path / "config.yml").write_text("output_path: [unclosed\n")
    assert configured_output_path() is None
    with pytest.raises(UserError, match="not valid YAML"):
        configured_output_path(tmp_path / "config.yml")  # named with -c: its problem is shown


@pytest.mark.parametrize(
    ("typo", "hint"),
    [
        ("not_a_key", None),
        ("foo", None),
        ("batchsize", "batch_size"),
        ("lr_shceduler", "lr_scheduler"),
        ("log_to_mlfow", "log_to_mlflow"),
        ("Seed", "seed"),
    ],
)
def test_unknown_key_suggests_only_a_close_name(typo, hint):
    # issue 23 C.6: 'not_a_key' was told "did you mean 'neptune_api_token'?"
    with pytest.raises(UserError) as info:
        load_config(TEMPLATE_PATH, [f"{typo}=1"])
    message = str(info.value)
    if hint is None:
        assert "did you mean" not in message
    else:
        assert f"did you mean '{hint}'?" in message
