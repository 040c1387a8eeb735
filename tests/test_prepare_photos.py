"""prepare_dataset / prepare_stanford_dataset.py on a folder of photos, one sub-folder per class."""

from __future__ import annotations

import csv
import os
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import prepare_stanford_dataset
from datasets.labels import LABEL_COLUMNS
from datasets.prepare import MARKER_NAME, prepare_dataset, read_marker
from datasets.prepare import photos as photos_module
from datasets.sample_data import class_color, make_sample_photos
from utils.errors import UserError

CLASSES = ("VW Golf", "Audi A4", "BMW 3, Touring")  # sorted: Audi, BMW, VW
ROTATED_SIZE = (40, 60)  # stored width x height; the photo shows 60 x 40 once straightened


def photo(class_index: int, size: tuple[int, int], seed: int) -> Image.Image:
    """A noisy picture in the class's colour."""
    rng = np.random.default_rng(seed)
    width, height = size
    pixels = np.array(class_color(class_index), np.float32) + rng.normal(0, 20, (height, width, 3))
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), mode="RGB")


def save(image: Image.Image, path: Path, fmt: str = "JPEG", **params) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, format=fmt, **params)


def make_photo_folder(root: Path, per_class: int = 4, classes=CLASSES) -> Path:
    """Plain JPEGs of odd sizes, ``001.jpg``... in every class."""
    return make_sample_photos(root, classes, per_class)


def make_awkward_folder(root: Path) -> Path:
    """The photo folder of the issue: odd sizes, a PNG, a CMYK and an EXIF-rotated JPEG, a
    broken file, a non-image, duplicate names, a nested folder, too small and empty classes,
    hidden files and a link."""
    make_photo_folder(root)
    audi, bmw, vw = (root / name for name in ("Audi A4", "BMW 3, Touring", "VW Golf"))
    rgba = photo(1, (53, 47), seed=7).convert("RGBA")
    rgba.putpixel((0, 0), (0, 0, 0, 0))
    save(rgba, audi / "transparent.png", "PNG")
    save(photo(1, (45, 61), seed=8).convert("CMYK"), bmw / "cmyk.jpg")
    exif = Image.Exif()
    exif[0x0112] = 6  # stored sideways: rotate 90 degrees clockwise to show
    save(photo(2, ROTATED_SIZE, seed=9), vw / "rotated.jpg", exif=exif.tobytes())
    save(photo(2, (50, 50), seed=10).convert("L"), vw / "grey.webp", "WEBP")
    (vw / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    (audi / "notes.txt").write_text("bought in 2019\n", encoding="utf-8")
    save(photo(0, (51, 49), seed=11), audi / "2019" / "001.jpg")  # nested, duplicate name
    (root / "Lonely Car").mkdir()
    save(photo(3, (50, 50), seed=12), root / "Lonely Car" / "only.jpg")
    (root / "Empty Class").mkdir()
    (root / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
    (audi / ".hidden.jpg").write_bytes(b"ignored")
    (root / "README.txt").write_text("my cars\n", encoding="utf-8")
    os.symlink(audi / "001.jpg", bmw / "link.jpg")
    return root


def read_rows(out: Path, split: str) -> list[dict]:
    with (out / f"{split}_labels.csv").open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        assert tuple(reader.fieldnames) == LABEL_COLUMNS
        return list(reader)


def split_of(out: Path) -> dict[str, str]:
    return {
        row["image_fname"]: split for split in ("train", "test") for row in read_rows(out, split)
    }


def test_awkward_photo_folder_prepares_into_the_standard_layout(tmp_path):
    raw = make_awkward_folder(tmp_path / "photos")
    out = tmp_path / "prepared"
    report = prepare_dataset(raw, out, progress=False)

    assert (report.layout, report.num_classes) == ("photos", 3)
    rows = {split: read_rows(out, split) for split in ("train", "test")}
    names = {row["class"]: row["class_name"] for split in rows for row in rows[split]}
    assert names == {"1": "Audi A4", "2": "BMW 3, Touring", "3": "VW Golf"}
    # 6 usable Audi (4 + PNG + nested), 5 BMW (4 + CMYK), 6 VW (4 + rotated + WebP): half test.
    for split in ("train", "test"):
        per_class = [sum(r["class"] == c for r in rows[split]) for c in ("1", "2", "3")]
        assert per_class == ([3, 2, 3] if split == "train" else [3, 3, 3])
    assert (report.num_train, report.num_test) == (8, 9)

    seen = set()
    for split, split_rows in rows.items():
        for row in split_rows:
            assert row["image_fname"].casefold() not in seen
            seen.add(row["image_fname"].casefold())
            with Image.open(out / split / row["image_fname"]) as image:
                assert image.format == "JPEG" and image.mode in ("RGB", "L")
                bbox = tuple(float(row[k]) for k in ("bbox_x1", "bbox_y1", "bbox_x2", "bbox_y2"))
                assert bbox == (0, 0, *image.size)
    assert sorted(seen) == sorted(p.name.casefold() for s in rows for p in (out / s).iterdir())

    where = split_of(out)
    rotated = next(name for name in where if name.startswith("rotated"))
    with Image.open(out / where[rotated] / rotated) as image:
        assert image.size == ROTATED_SIZE[::-1]  # straightened
        assert image.getexif().get(0x0112, 1) == 1
    unchanged = (raw / "VW Golf" / "001.jpg").read_bytes()
    assert (out / where["001-4.jpg"] / "001-4.jpg").read_bytes() == unchanged

    assert report.broken == ["VW Golf/broken.jpg"]
    assert report.refused == ["BMW 3, Touring/link.jpg"]
    details = report.details
    assert details["not_images"] == ["Audi A4/notes.txt"]
    assert details["straightened"] == ["VW Golf/rotated.jpg"]
    assert [c.split(" (")[0] for c in details["converted"]] == [
        "Audi A4/transparent.png",
        "BMW 3, Touring/cmyk.jpg",
        "VW Golf/grey.webp",
    ]
    assert details["nested"] == ["Audi A4/2019/001.jpg"]
    assert details["outside_class_folders"] == ["README.txt"]
    assert [c.split(" (")[0] for c in details["left_out_classes"]] == ["Empty Class", "Lonely Car"]
    # The same base name in four places: the first keeps it, the others are renamed uniquely.
    assert "Audi A4/001.jpg -> 001.jpg" not in details["renamed"]
    assert {"Audi A4/2019/001.jpg -> 001-2.jpg", "VW Golf/001.jpg -> 001-4.jpg"} <= set(
        details["renamed"]
    )

    marker = read_marker(out)
    assert marker["layout"] == "photos" and marker["seed"] == 0 and marker["test_fraction"] == 0.5
    assert marker["details"] == details
    assert not list(tmp_path.glob(".prepared.*"))  # no work folder left


def test_split_is_stratified_and_reproducible(tmp_path):
    raw = make_photo_folder(tmp_path / "photos", per_class=10)

    def prepare(name: str, **kwargs) -> dict[str, str]:
        prepare_dataset(raw, tmp_path / name, progress=False, **kwargs)
        return split_of(tmp_path / name)

    first, again = prepare("a", seed=3), prepare("b", seed=3)
    assert first == again
    assert prepare("c", seed=4) != first
    fifth = prepare("d", test_fraction=0.2)
    assert sum(s == "test" for s in fifth.values()) == 3 * 2
    test_rows = read_rows(tmp_path / "d", "test")
    assert sorted(r["class_name"] for r in test_rows) == sorted(CLASSES * 2)


def test_pre_split_folder_keeps_the_users_split(tmp_path):
    raw = tmp_path / "photos"
    make_photo_folder(raw / "train", per_class=3, classes=("Cab", "Van"))
    make_photo_folder(raw / "test", per_class=1, classes=("Cab", "Van", "Bus"))
    report = prepare_dataset(raw, tmp_path / "out", test_fraction=0.9, progress=False)
    assert (report.layout, report.num_train, report.num_test) == ("photos-split", 6, 2)
    assert report.details["left_out_classes"] == ["Bus (no usable image in train/)"]
    # Same names in train/ and test/: unique in the output all the same.
    where = split_of(tmp_path / "out")
    assert len(where) == 8
    assert sum(name.startswith("001") for name in where) == 4
    assert sorted(where.values()).count("test") == 2


def test_rerun_is_skipped_and_cli_reports_what_was_left_out(tmp_path, capsys):
    raw = make_awkward_folder(tmp_path / "photos")
    out = tmp_path / "out"
    argv = ["--raw-dir", str(raw), "--out-dir", str(out), "--quiet", "--seed", "5"]
    assert prepare_stanford_dataset.main(argv) == 0
    printed = capsys.readouterr().out
    assert "Prepared a photo folder (from the 'photos' layout)" in printed
    assert "3 classes; left out: 1 broken, 1 refused." in printed
    assert "class folders left out: 2" in printed and "photos straightened: 1" in printed
    assert read_marker(out)["seed"] == 5
    assert prepare_stanford_dataset.main(argv) == 0
    assert "Already prepared" in capsys.readouterr().out


@pytest.mark.parametrize("fraction", [0.0, 1.0, -0.5])
def test_bad_test_fraction_is_a_user_error(tmp_path, fraction):
    raw = make_photo_folder(tmp_path / "photos")
    with pytest.raises(UserError, match="--test-fraction"):
        prepare_dataset(raw, tmp_path / "out", test_fraction=fraction, progress=False)
    assert not (tmp_path / "out").exists()


def test_too_few_usable_classes_is_a_user_error_and_writes_nothing(tmp_path):
    raw = make_photo_folder(tmp_path / "photos", per_class=3, classes=("Cab", "Van"))
    for path in (raw / "Van").iterdir():
        path.write_bytes(b"broken")
    with pytest.raises(UserError, match="at least two") as err:
        prepare_dataset(raw, tmp_path / "out", progress=False)
    assert "Van (no usable images)" in str(err.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["photos"]


def test_interrupted_photo_run_leaves_nothing_behind(tmp_path, monkeypatch):
    raw = make_photo_folder(tmp_path / "photos")

    def interrupt(*args):
        raise KeyboardInterrupt

    monkeypatch.setattr(photos_module, "_move", interrupt)
    with pytest.raises(KeyboardInterrupt):
        prepare_dataset(raw, tmp_path / "out", progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["photos"]


def test_stanford_folders_are_not_taken_for_photos(tmp_path):
    raw = make_photo_folder(tmp_path / "raw", classes=("cars_train", "cars_test"))
    with pytest.raises(UserError, match="No Stanford Cars download was recognised") as err:
        prepare_dataset(raw, tmp_path / "out", progress=False)
    assert "one sub-folder per class" in str(err.value)


def test_prepared_photos_have_the_marker_last(tmp_path):
    raw = make_photo_folder(tmp_path / "photos")
    out = tmp_path / "out"
    prepare_dataset(raw, out, progress=False)
    marker_time = (out / MARKER_NAME).stat().st_mtime_ns
    assert all(p.stat().st_mtime_ns <= marker_time for p in out.rglob("*") if p.is_file())


def test_a_big_video_in_a_photo_folder_is_never_read_whole(tmp_path):
    # issue 23 A.8: a 3 GB IMG_0001.MOV among the photos was read whole (peak RSS 3.9 GB) only
    # to be reported as "not an image"; a sparse file of that kind costs no disk here
    raw = make_photo_folder(tmp_path / "photos", per_class=2)
    video = raw / "Audi A4" / "IMG_0001.MOV"
    with video.open("wb") as handle:
        handle.write(b"\x00\x00\x00\x14ftypqt  \x00\x00\x00\x00qt  ")  # QuickTime's header
        handle.truncate(512 * 2**20)
    tracemalloc.start()
    try:
        report = prepare_dataset(raw, tmp_path / "out", progress=False)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert report.details["not_images"] == ["Audi A4/IMG_0001.MOV"]
    assert peak < 32 * 2**20, f"{peak / 2**20:.0f} MiB allocated for a 512 MiB non-image"
    kept = sorted(p.name for p in (tmp_path / "out").rglob("*.jpg"))
    assert len(kept) == 6 and (raw / "Audi A4" / "001.jpg").read_bytes() in {
        p.read_bytes() for p in (tmp_path / "out").rglob("001*.jpg")
    }  # a plain JPEG is still copied byte for byte
