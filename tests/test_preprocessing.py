"""The preprocessing spec: built once from the config, stored in checkpoints, read back."""

from __future__ import annotations

from configuration import TEMPLATE_PATH, load_config
from datasets.preprocessing import Augmentation, Preprocessing, augmentations_from
from models.checkpoint import CheckpointMeta


def test_template_config_gives_the_thesis_preprocessing():
    config = load_config(TEMPLATE_PATH)
    spec = config.preprocessing()
    assert spec == Preprocessing(
        image_size=(227, 227),
        normalize=True,
        mean=(0.4707, 0.4602, 0.4550),
        std=(0.2594, 0.2585, 0.2635),
    )
    assert spec.channels == 3


def test_grayscale_config_takes_the_grayscale_params():
    config = load_config(TEMPLATE_PATH, ["convert_to_grayscale=True", "crop_to_bboxes=True"])
    spec = config.preprocessing()
    assert spec.grayscale and spec.channels == 1 and spec.mean == (0.4627,)
    assert spec.crop_to_bboxes
    assert not spec.for_evaluation().crop_to_bboxes


def test_augmentations_arrive_switched_on_or_off():
    on = load_config(TEMPLATE_PATH, ["augment_tensors=True"]).augmentations()
    assert [a.on_tensor for a in on] == [False, False, False, True]
    off = load_config(TEMPLATE_PATH, ["augment_images=False"]).augmentations()
    assert off == []
    assert augmentations_from({"RandomHorizontalFlip": None}) == [
        Augmentation("RandomHorizontalFlip", {}, on_tensor=False)
    ]


def test_spec_round_trips_through_plain_data():
    spec = Preprocessing(image_size=[64, 48], grayscale=True, normalize=True, mean=[0.5], std=[0.2])
    data = spec.to_dict()
    assert data["image_size"] == [64, 48] and isinstance(data["mean"], list)
    assert Preprocessing.from_dict(data) == spec


def test_without_normalize_the_input_is_zero_mean_unit_std():
    assert Preprocessing(grayscale=True).input_mean_std() == ([0.0], [1.0])
    spec = Preprocessing(normalize=True, mean=(0.1, 0.2, 0.3), std=(1, 2, 3))
    assert spec.input_mean_std() == ([0.1, 0.2, 0.3], [1.0, 2.0, 3.0])


def test_format_1_checkpoint_metadata_becomes_a_spec():
    flat = {
        "architecture": "ghost",
        "num_classes": 3,
        "class_names": ["a", "b", "c"],
        "image_size": [64, 64],
        "grayscale": False,
        "normalize": True,
        "mean": [0.4707, 0.4602, 0.455],
        "std": [0.2594, 0.2585, 0.2635],
        "arch_options": {},
        "run_name": "ghost_20261126050744",
        "format_version": 1,
    }
    meta = CheckpointMeta.from_dict(flat)
    spec = Preprocessing.from_dict(meta.preprocessing)
    assert spec.image_size == (64, 64) and spec.normalize and spec.mean[2] == 0.455
    assert meta.loss_function is None and meta.img_channels == 3
