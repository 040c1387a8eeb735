"""The miniature Stanford Cars generator writes the real raw formats, deterministically."""

from __future__ import annotations

import io
import itertools
import math
import tarfile

import numpy as np
import pytest
import scipy.io
from PIL import Image, ImageStat

from datasets import sample_data
from datasets.sample_data import (
    class_color,
    make_sample_raw,
    render_image,
    sample_class_names,
    sample_images,
)


def _tar_names(path):
    with tarfile.open(path) as tar:
        return sorted(tar.getnames())


def _mat_from_tar(path, member):
    with tarfile.open(path) as tar:
        return scipy.io.loadmat(io.BytesIO(tar.extractfile(member).read()))


def test_updated_layout_files_and_mat_structure(tmp_path):
    raw = make_sample_raw(tmp_path, "updated")
    assert raw == tmp_path
    files = sorted(p.name for p in raw.iterdir())
    assert files == ["car_devkit.tgz", "car_ims.tgz", "cars_annos.mat"]
    members = [f"car_ims/{i:06d}.jpg" for i in range(1, 19)]
    assert _tar_names(raw / "car_ims.tgz") == ["car_ims", *members]
    assert _tar_names(raw / "car_devkit.tgz") == [
        "devkit",
        "devkit/cars_meta.mat",
        "devkit/cars_test_annos.mat",
        "devkit/cars_train_annos.mat",
    ]
    mat = scipy.io.loadmat(raw / "cars_annos.mat")
    annos = mat["annotations"]
    assert annos.shape == (1, 18)
    assert annos.dtype.names == (
        "relative_im_path",
        "bbox_x1",
        "bbox_y1",
        "bbox_x2",
        "bbox_y2",
        "class",
        "test",
    )
    first = annos[0, 0]
    assert first["relative_im_path"][0] == "car_ims/000001.jpg"
    assert first["class"].shape == (1, 1)
    assert sorted(int(a["test"][0, 0]) for a in annos[0]).count(1) == 6
    names = [c[0] for c in mat["class_names"][0]]
    assert names == sample_class_names(3)
    meta = _mat_from_tar(raw / "car_devkit.tgz", "devkit/cars_meta.mat")
    assert meta["class_names"].shape == (1, 3)
    assert [c[0] for c in meta["class_names"][0]] == names


def test_original_layout_files_and_mat_structure(tmp_path):
    raw = make_sample_raw(tmp_path, "original", num_classes=2, train_per_class=3, test_per_class=2)
    assert sorted(p.name for p in raw.iterdir()) == [
        "car_devkit.tgz",
        "cars_test.tgz",
        "cars_test_annos_withlabels.mat",
        "cars_train.tgz",
    ]
    train_names = [f"cars_train/{i:05d}.jpg" for i in range(1, 7)]
    assert _tar_names(raw / "cars_train.tgz")[1:] == train_names
    assert _tar_names(raw / "cars_test.tgz")[1:] == [f"cars_test/{i:05d}.jpg" for i in range(1, 5)]
    train = _mat_from_tar(raw / "car_devkit.tgz", "devkit/cars_train_annos.mat")["annotations"]
    assert train.dtype.names == ("bbox_x1", "bbox_y1", "bbox_x2", "bbox_y2", "class", "fname")
    test = _mat_from_tar(raw / "car_devkit.tgz", "devkit/cars_test_annos.mat")["annotations"]
    assert test.dtype.names == ("bbox_x1", "bbox_y1", "bbox_x2", "bbox_y2", "fname")
    labelled = scipy.io.loadmat(raw / "cars_test_annos_withlabels.mat")["annotations"]
    assert "class" in labelled.dtype.names and labelled.shape == (1, 4)
    assert labelled[0, 0]["fname"][0] == "00001.jpg"


@pytest.mark.parametrize("nested", [False, True])
def test_extracted_layout(tmp_path, nested):
    raw = make_sample_raw(tmp_path, "extracted", nested=nested)
    assert raw == tmp_path / "stanford_cars"
    train_dir = raw / "cars_train" / "cars_train" if nested else raw / "cars_train"
    assert len(list(train_dir.glob("*.jpg"))) == 12
    assert (raw / "cars_test_annos_withlabels.mat").is_file()
    assert sorted(p.name for p in (raw / "devkit").iterdir()) == [
        "cars_meta.mat",
        "cars_test_annos.mat",
        "cars_train_annos.mat",
    ]


def test_nested_only_for_extracted(tmp_path):
    with pytest.raises(ValueError):
        make_sample_raw(tmp_path, "updated", nested=True)
    with pytest.raises(ValueError):
        make_sample_raw(tmp_path, "zip")


def test_images_sizes_modes_and_bbox_colour():
    images = sample_images(num_classes=3, train_per_class=4, test_per_class=2, seed=3)
    sizes = {image.size for image in images}
    assert len(sizes) > 10
    assert all(37 <= w <= 120 and 37 <= h <= 120 for w, h in sizes)
    for split in ("train", "test"):
        modes = [image.mode for image in images if image.split == split]
        assert "L" in modes and "CMYK" in modes
    for image in images:
        width, height = image.size
        x1, y1, x2, y2 = image.bbox
        assert 1 <= x1 < x2 <= width and 1 <= y1 < y2 <= height
        assert (x2 - x1 + 1) >= 0.4 * width and (y2 - y1 + 1) >= 0.4 * height
        picture = Image.open(io.BytesIO(render_image(image, seed=3)))
        assert picture.format == "JPEG" and picture.mode == image.mode
        assert picture.size == image.size
        expected = Image.new("RGB", (1, 1), class_color(image.class_id - 1)).convert(image.mode)
        expected = expected.convert("RGB").getpixel((0, 0))
        mean = ImageStat.Stat(picture.convert("RGB").crop(image.bbox)).mean
        assert all(abs(m - e) < 12 for m, e in zip(mean, expected)), (image, mean, expected)


def test_class_colours_are_well_separated():
    colours = [np.array(class_color(i), dtype=float) for i in range(10)]
    closest = min(np.linalg.norm(a - b) for a, b in itertools.combinations(colours, 2))
    assert closest > 60
    assert all(max(c) - min(c) > 100 for c in colours)  # saturated, unlike the grey background


def test_class_names_distinct():
    names = sample_class_names(30)
    assert len(set(names)) == 30
    assert names[0] == "Sample Make Model1 2001"


def test_same_seed_same_bytes_across_layouts(tmp_path):
    updated = make_sample_raw(tmp_path / "u", "updated", seed=5)
    extracted = make_sample_raw(tmp_path / "e", "extracted", seed=5)
    with tarfile.open(updated / "car_ims.tgz") as tar:
        for image in sample_images(seed=5):
            data = tar.extractfile(f"car_ims/{image.file_name('updated')}").read()
            folder = extracted / f"cars_{image.split}"
            assert (folder / image.file_name("extracted")).read_bytes() == data
    other = sample_images(seed=6)
    assert [i.bbox for i in other] != [i.bbox for i in sample_images(seed=5)]


def test_cli(tmp_path, capsys):
    code = sample_data.main(
        [
            str(tmp_path),
            "--layout",
            "original",
            "--classes",
            "2",
            "--train-per-class",
            "3",
            "--test-per-class",
            "3",
            "--seed",
            "1",
        ]
    )
    assert code == 0
    assert "12 images" in capsys.readouterr().out
    assert (tmp_path / "cars_train.tgz").is_file()
    with pytest.raises(SystemExit) as exc:
        sample_data.main([str(tmp_path), "--classes", "0"])
    assert exc.value.code == 2


def test_file_names():
    image = sample_images()[0]
    assert image.file_name("updated") == "000001.jpg"
    assert image.file_name("original") == image.file_name("extracted")
    assert math.isclose(len(sample_images(num_classes=4, train_per_class=1, test_per_class=1)), 8)
