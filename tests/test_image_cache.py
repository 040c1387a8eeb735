"""The decoded-image cache (cache_images): build, reuse, invalidation, rebuild after damage,
and the same tensors as the uncached path."""

from __future__ import annotations

import io
import json
import logging
import multiprocessing
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import datasets.cache.build as cache_build
import datasets.cache.images as cache_module
from datasets.cache.images import open_or_build
from datasets.preprocessing import Augmentation, Preprocessing
from datasets.stanford_data import StanfordCarsDataset
from datasets.stanford_data_module import StanfordCarsDataModule

ROOT = Path(__file__).resolve().parent.parent
PRE = Preprocessing(image_size=(24, 32), normalize=True, mean=(0.5,) * 3, std=(0.25,) * 3)


@pytest.fixture
def data(tmp_path, prepared_data):
    """A writable copy of the miniature prepared data (the cache is written beside it)."""
    return shutil.copytree(prepared_data, tmp_path / "prepared")


def _build(data, preprocessing=PRE, split="test", workers=1):
    dataset = StanfordCarsDataset(data, split, preprocessing)
    return open_or_build(
        dataset.image_dir,
        split,
        dataset.samples,
        preprocessing,
        data / ".cache",
        workers=workers,
        progress=False,
    )


def _files(data):
    return sorted(p.name for p in (data / ".cache").iterdir())


def test_cached_tensors_equal_uncached(data):
    plain = StanfordCarsDataModule(data, PRE)
    cached = StanfordCarsDataModule(data, PRE, cache_images=True, progress=False)
    plain.setup("fit")
    cached.setup("fit")
    assert cached.valid_dataset.cache is not None and cached.train_dataset.cache is not None
    for index in range(len(plain.valid_dataset)):
        a, label_a = plain.valid_dataset[index]
        b, label_b = cached.valid_dataset[index]
        assert label_a == label_b
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6)
    # uint8 items (augment_on: device) are the cached pixels themselves
    dataset = cached.valid_dataset
    dataset.uint8 = True
    image, _ = dataset[0]
    assert image.dtype == torch.uint8 and image.shape == (3, 24, 32)
    np.testing.assert_array_equal(image.permute(1, 2, 0).numpy(), dataset.cache[0])


def test_bbox_crop_and_grayscale_are_cached(data):
    pre = Preprocessing(image_size=(16, 16), grayscale=True, crop_to_bboxes=True)
    plain = StanfordCarsDataset(data, "train", pre)
    cached = StanfordCarsDataset(data, "train", pre, cache=_build(data, pre, "train"))
    for index in (0, len(plain) - 1):
        torch.testing.assert_close(plain[index][0], cached[index][0], rtol=0, atol=1e-6)
    assert cached[0][0].shape == (1, 16, 16)


def test_reused_without_rebuilding(data, monkeypatch):
    first = _build(data)
    names = _files(data)
    mtime = os.stat(first.data_path).st_mtime_ns

    def no_build(*args, **kwargs):
        raise AssertionError("a valid cache was rebuilt")

    monkeypatch.setattr(cache_module, "_build", no_build)
    second = _build(data)
    assert second.data_path == first.data_path and _files(data) == names
    assert os.stat(second.data_path).st_mtime_ns == mtime


def test_changed_setting_or_file_builds_a_new_cache(data):
    first = _build(data)
    other_size = _build(data, Preprocessing(image_size=(16, 16)))
    assert other_size.data_path != first.data_path and other_size.shape[1:3] == (16, 16)
    image = data / "test" / StanfordCarsDataset(data, "test").samples[0].fname
    os.utime(image, ns=(image.stat().st_atime_ns, image.stat().st_mtime_ns + 10**9))
    assert _build(data).data_path != first.data_path


@pytest.mark.parametrize("damage", ["truncate", "header", "no_header"])
def test_damaged_cache_is_rebuilt(data, damage):
    first = _build(data)
    expected = np.array(first.array)
    header = first.data_path.with_suffix(".json")
    if damage == "truncate":
        with first.data_path.open("r+b") as handle:
            handle.truncate(first.data_path.stat().st_size // 2)
    elif damage == "header":
        content = json.loads(header.read_text())
        content["shape"][0] += 1
        header.write_text(json.dumps(content))
    else:
        header.unlink()
    rebuilt = _build(data)
    assert rebuilt.data_path.stat().st_size == expected.size
    np.testing.assert_array_equal(np.array(rebuilt.array), expected)
    assert header.exists()


def test_pool_build_equals_inline_build(data, monkeypatch):
    inline = np.array(_build(data).array)
    shutil.rmtree(data / ".cache")
    monkeypatch.setattr(cache_module, "_POOL_MIN_IMAGES", 1)
    pooled = _build(data, workers=2)
    np.testing.assert_array_equal(np.array(pooled.array), inline)
    assert not [p for p in (data / ".cache").iterdir() if p.name.endswith(".tmp")]


def test_workers_map_the_file_instead_of_copying(data):
    cache = _build(data)
    assert cache[0].shape == (24, 32, 3)
    assert isinstance(cache.array, np.memmap) and cache.array.mode == "r"
    assert cache.__getstate__()["_array"] is None


def test_augmented_training_through_the_cache(data):
    augmentations = [Augmentation("RandomHorizontalFlip", {"p": 0.5})]
    cached = StanfordCarsDataModule(
        data, PRE, augmentations, batch_size=4, cache_images=True, progress=False
    )
    cached.setup("fit")
    images, labels = next(iter(cached.train_dataloader()))
    assert images.shape == (4, 3, 24, 32) and images.dtype == torch.float32


def test_processes_asking_at_once_build_the_cache_once(data, tmp_path, monkeypatch):
    # The processes of a multi-GPU run set up their data together.
    builds = tmp_path / "builds.txt"
    original = cache_module._build

    def counted(*args, **kwargs):
        with builds.open("a") as handle:
            handle.write(f"{os.getpid()}\n")
        time.sleep(0.5)  # long enough for the other process to ask meanwhile
        return original(*args, **kwargs)

    monkeypatch.setattr(cache_module, "_build", counted)
    context = multiprocessing.get_context("fork")  # the children inherit the patch
    children = [context.Process(target=_build, args=(data,)) for _ in range(2)]
    for child in children:
        child.start()
    for child in children:
        child.join(60)
    assert [child.exitcode for child in children] == [0, 0]
    assert len(builds.read_text().splitlines()) == 1
    assert not [name for name in _files(data) if name.endswith(".tmp")]
    reused = _build(data)  # valid: this process reads it without building
    assert len(builds.read_text().splitlines()) == 1 and reused.shape[0] > 0


def test_cache_overwritten_with_zeros_of_the_same_size_is_rebuilt(data, caplog):
    # issue 23 A.7: zeros over .cache/test-*.u8 were read, and training then failed with a NaN
    # loss blamed on the learning rate
    first = _build(data)
    expected = np.array(first.array)
    size = first.data_path.stat().st_size
    first.data_path.write_bytes(bytes(size))
    with caplog.at_level(logging.WARNING):
        rebuilt = _build(data)
    assert "damaged" in caplog.text and "rebuilt" in caplog.text
    np.testing.assert_array_equal(np.array(rebuilt.array), expected)
    caplog.clear()
    _build(data)  # now whole again: read without a word
    assert "damaged" not in caplog.text


def test_image_replaced_with_same_size_and_old_mtime_builds_a_new_cache(data):
    # issue 23 A.7: another image of the same byte size, given the old mtime, was not noticed
    first = _build(data)
    samples = StanfordCarsDataset(data, "test").samples
    image, other = (data / "test" / s.fname for s in samples[:2])
    stat = image.stat()
    with Image.open(other) as replacement:  # another picture, re-encoded to the same size
        content = _jpeg_of_size(replacement, stat.st_size)
    image.write_bytes(content)
    os.utime(image, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert (image.stat().st_size, image.stat().st_mtime_ns) == (stat.st_size, stat.st_mtime_ns)
    second = _build(data)
    assert second.data_path != first.data_path
    assert not np.array_equal(np.array(second.array[0]), np.array(first.array[0]))


def _jpeg_of_size(image, size: int) -> bytes:
    """``image`` as a JPEG of exactly ``size`` bytes (padded after the end marker, which every
    decoder ignores); the test picks a quality that fits."""
    for quality in range(95, 5, -5):
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG", quality=quality)
        if len(buffer.getvalue()) <= size:
            return buffer.getvalue() + bytes(size - len(buffer.getvalue()))
    raise AssertionError("no quality fits")


def test_stale_temp_files_of_dead_processes_are_removed(data):
    # issue 23 A.11: a build killed mid-way left a full-size temp file that no run removed
    cache_dir = data / ".cache"
    cache_dir.mkdir()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = cache_dir / f".train-0123abcd.u8.{dead.pid}.tmp"  # the old name: pid only
    stale_here = cache_dir / f".train-0123abcd.u8.{cache_build._HOST}.{dead.pid}.tmp"
    running = cache_dir / f".train-4567.u8.{cache_build._HOST}.{os.getpid()}.tmp"
    elsewhere = cache_dir / f".train-89ab.u8.othermachine.{dead.pid}.tmp"
    for path in (stale, stale_here, running, elsewhere):
        path.write_bytes(b"\0" * 1024)
    _build(data)
    left = {p.name for p in cache_dir.iterdir() if p.name.endswith(".tmp")}
    assert left == {running.name, elsewhere.name}


@pytest.mark.parametrize("whom", [pytest.param("process", marks=pytest.mark.slow), "group"])
def test_sigterm_during_a_pool_build_leaves_no_temp_file_and_no_traceback(data, whom):
    # issue 23 A.11: SIGTERM mid-build left .cache/.train-<key>.u8.<pid>.tmp (full size) and a
    # ForkPoolWorker traceback
    script = textwrap.dedent(
        f"""
        import time
        from pathlib import Path
        import datasets.cache.images as cache
        import datasets.cache.build as build
        from datasets.preprocessing import Preprocessing
        from datasets.stanford_data import StanfordCarsDataset

        slow = build.decode_resized
        def decode(*args):
            time.sleep(0.5)
            return slow(*args)
        build.decode_resized = decode
        cache._POOL_MIN_IMAGES = 1
        data = Path({str(data)!r})
        pre = Preprocessing(image_size=(24, 32))
        dataset = StanfordCarsDataset(data, "train", pre)
        cache.open_or_build(dataset.image_dir, "train", dataset.samples, pre, data / ".cache",
                            workers=2, progress=False)
        print("built")
        """
    )
    child = subprocess.Popen(
        [sys.executable, "-c", script],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    deadline = time.monotonic() + 60
    while not list((data / ".cache").glob("*.tmp")) and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.3)  # the workers are decoding
    if whom == "group":  # what timeout(1), systemd or a batch system's scancel send
        os.killpg(child.pid, signal.SIGTERM)
    else:
        child.send_signal(signal.SIGTERM)
    out, err = child.communicate(timeout=60)
    assert child.returncode == -signal.SIGTERM and "built" not in out
    assert "Traceback" not in err, err
    assert not list((data / ".cache").glob("*.tmp"))
