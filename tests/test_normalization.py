"""The normalization coefficients: the thesis's per-image method and the pooled one, checked
against numpy on hand-made images; the command line's YAML."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

import normalization_coeffs
from configuration import validate_config
from datasets.labels import Annotation, labels_csv, write_labels_csv
from datasets.normalization import compute_normalization_params, normalization_yaml
from utils.errors import UserError

SIZE = (9, 8)  # height, width: the images are made at this size, so resizing keeps every pixel


@pytest.fixture(scope="module")
def hand_made(tmp_path_factory) -> tuple[Path, list[np.ndarray]]:
    """A prepared folder of four lossless RGB images of different brightness and contrast."""
    root = tmp_path_factory.mktemp("handmade")
    rng = np.random.default_rng(7)
    pixels = [
        np.full((*SIZE, 3), 200, np.uint8),
        rng.integers(0, 256, (*SIZE, 3), dtype=np.uint8),
        rng.integers(0, 60, (*SIZE, 3), dtype=np.uint8),
        (rng.integers(0, 2, (*SIZE, 3)) * 255).astype(np.uint8),
    ]
    for split in ("train", "test"):
        (root / split).mkdir()
        rows = []
        for i, array in enumerate(pixels):
            name = f"{i:06d}.png"
            Image.fromarray(array).save(root / split / name)
            rows.append(Annotation(name, i % 2, (0, 0, SIZE[1], SIZE[0]), f"class {i % 2}"))
        write_labels_csv(labels_csv(root, split), rows)
    return root, pixels


def _expected(images: list[np.ndarray], method: str) -> tuple[list[float], list[float]]:
    scaled = np.stack([image.astype(np.float64) / 255 for image in images])  # N, H, W, C
    if method == "per_image":
        return scaled.mean(axis=(1, 2)).mean(axis=0), scaled.std(axis=(1, 2)).mean(axis=0)
    return scaled.mean(axis=(0, 1, 2)), scaled.std(axis=(0, 1, 2))


@pytest.mark.parametrize("method", ["per_image", "pooled"])
@pytest.mark.parametrize("grayscale", [False, True])
def test_both_methods_match_numpy(hand_made, method, grayscale):
    root, pixels = hand_made
    images = pixels
    if grayscale:  # the luma PIL computes, as the Grayscale transform does
        images = [np.asarray(Image.fromarray(p).convert("L"))[..., None] for p in pixels]
    params = compute_normalization_params(
        root, image_size=SIZE, grayscale=grayscale, batch_size=3, method=method
    )
    mean, std = _expected(images, method)
    assert params["mean"] == pytest.approx(list(mean), abs=6e-5)
    assert params["std"] == pytest.approx(list(std), abs=6e-5)
    assert len(params["mean"]) == (1 if grayscale else 3)


def test_pooled_std_is_larger_than_the_thesis_method(hand_made):
    root, _ = hand_made
    per_image = compute_normalization_params(root, image_size=SIZE)
    pooled = compute_normalization_params(root, image_size=SIZE, method="pooled")
    assert per_image["mean"] == pooled["mean"]
    assert all(p > q for p, q in zip(pooled["std"], per_image["std"]))


def test_unknown_method_is_refused(hand_made):
    with pytest.raises(ValueError, match="per_image, pooled"):
        compute_normalization_params(hand_made[0], image_size=SIZE, method="median")


def test_yaml_pastes_into_a_config():
    rgb = {"mean": [0.4707, 0.4602, 0.455], "std": [0.2594, 0.2585, 0.2635]}
    gray = {"mean": [0.4627], "std": [0.2545]}
    pasted = yaml.safe_load(normalization_yaml(rgb, gray))
    config = validate_config(pasted)
    assert config.normalization_params_rgb.model_dump() == rgb
    assert config.normalization_params_grayscale.model_dump() == gray


def test_command_line_prints_yaml_for_the_config(hand_made, tmp_path, capsys):
    root, _ = hand_made
    config = tmp_path / "config.yml"
    config.write_text(f"stanford_data_path: '{root}'\nimage_size: [{SIZE[0]}, {SIZE[1]}]\n")
    for method in ("per_image", "pooled"):
        assert normalization_coeffs.main(["-c", str(config), "--method", method]) == 0
        printed = capsys.readouterr().out
        assert f"method {method}" in printed.splitlines()[0]
        pasted = yaml.safe_load(printed)
        expected = compute_normalization_params(root, image_size=SIZE, method=method)
        assert pasted["normalization_params_rgb"] == expected
        assert len(pasted["normalization_params_grayscale"]["mean"]) == 1
    with pytest.raises(UserError, match="nowhere"):
        normalization_coeffs.main(["-c", str(config), "-d", str(tmp_path / "nowhere")])
