"""A decoded-image cache: each image of a split once through the deterministic stages
([bbox crop / erase] -> resize -> [grayscale]) into one uint8 array on disk.

Files, beside the prepared data: ``<cache_dir>/<split>-<key>.u8`` (the raw ``(N, H, W, C)``
array) and ``<split>-<key>.json`` (its header, written last and atomically). The key is a hash
of everything that changes the pixels: image size, grayscale, crop and erase settings, and
every file's name, size, modification time and bounding box. A header that is missing, does
not parse, fails its own checksum or does not match the array's size means the cache is
rebuilt, never read. Loader workers map the array read-only, so no process copies it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import multiprocessing
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from filelock import FileLock
from PIL import Image
from tqdm import tqdm

from datasets.labels import Annotation
from datasets.preprocessing import Preprocessing
from datasets.transforms import crop_to_bbox, load_image, resize_stages
from utils.errors import UserError
from utils.files import replacing, write_json_atomic

log = logging.getLogger(__name__)

CACHE_DIRNAME = ".cache"
# Bump when the way pixels are produced changes, so that old caches are not reused.
FORMAT_VERSION = 1
# Fewer images than this are decoded in this process: a pool costs more than it saves.
_POOL_MIN_IMAGES = 64


def decode_resized(path: Path, bbox: Sequence[float], preprocessing: Preprocessing) -> Image.Image:
    """One image through decode -> [bbox crop / erase] -> resize -> [grayscale]."""
    img = load_image(path)
    if preprocessing.crop_to_bboxes:
        img = crop_to_bbox(img, bbox, preprocessing.erase_background)
    return resize_stages(preprocessing)(img)


def image_array(img: Image.Image) -> np.ndarray:
    """A PIL image as ``(H, W, C)`` uint8."""
    array = np.asarray(img, dtype=np.uint8)
    return array[:, :, None] if array.ndim == 2 else array


def array_image(array: np.ndarray) -> Image.Image:
    """The inverse of ``image_array``."""
    return Image.fromarray(array[:, :, 0] if array.shape[2] == 1 else array)


def cache_key(image_dir: Path, samples: Sequence[Annotation], preprocessing: Preprocessing) -> str:
    """A hash of everything that changes the cached pixels."""
    files = []
    for sample in samples:
        stat = (image_dir / sample.fname).stat()
        entry = [sample.fname, stat.st_size, stat.st_mtime_ns]
        if preprocessing.crop_to_bboxes:
            entry.append([float(v) for v in sample.bbox])
        files.append(entry)
    content = {
        "version": FORMAT_VERSION,
        "image_size": list(preprocessing.image_size),
        "grayscale": preprocessing.grayscale,
        "crop_to_bboxes": preprocessing.crop_to_bboxes,
        "erase_background": preprocessing.crop_to_bboxes and preprocessing.erase_background,
        "files": files,
    }
    return hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()[:20]


def _header_checksum(header: dict) -> str:
    body = {k: v for k, v in header.items() if k != "checksum"}
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


@dataclass
class ImageCache:
    """A built cache, mapped read-only on first access in each process."""

    data_path: Path
    shape: tuple[int, int, int, int]

    def __post_init__(self) -> None:
        self._array: np.ndarray | None = None

    def __len__(self) -> int:
        return self.shape[0]

    @property
    def nbytes(self) -> int:
        return _nbytes(self.shape)

    @property
    def array(self) -> np.ndarray:
        if self._array is None:
            self._array = np.memmap(self.data_path, dtype=np.uint8, mode="r", shape=self.shape)
        return self._array

    def __getitem__(self, index: int) -> np.ndarray:
        return self.array[index]

    def __getstate__(self) -> dict:
        # Workers map the file themselves instead of receiving a pickled copy of it.
        return {"data_path": self.data_path, "shape": self.shape, "_array": None}


def _nbytes(shape: tuple) -> int:
    """The size of a uint8 array of ``shape``: the cache file's length."""
    return int(np.prod(shape))


def _read_valid(data_file: Path, header_file: Path, key: str, shape: tuple) -> bool:
    try:
        header = json.loads(header_file.read_text())
        size = data_file.stat().st_size
    except (OSError, ValueError):
        return False
    return (
        isinstance(header, dict)
        and header.get("checksum") == _header_checksum(header)
        and header.get("key") == key
        and tuple(header.get("shape", ())) == shape
        and header.get("bytes") == size == _nbytes(shape)
    )


_worker_state: dict = {}


def _init_worker(data_file: str, shape: tuple, jobs: list, preprocessing: Preprocessing) -> None:
    _worker_state.update(
        array=np.memmap(data_file, dtype=np.uint8, mode="r+", shape=shape),
        jobs=jobs,
        preprocessing=preprocessing,
    )


def _fill(start_stop: tuple[int, int]) -> int:
    array, jobs = _worker_state["array"], _worker_state["jobs"]
    start, stop = start_stop
    for index in range(start, stop):
        path, bbox = jobs[index]
        try:
            img = decode_resized(Path(path), bbox, _worker_state["preprocessing"])
        except (OSError, ValueError) as err:  # PIL's errors for truncated or foreign files
            raise UserError(
                f"image '{path}' could not be decoded ({type(err).__name__}: {err}). Prepare "
                "the dataset again with 'python prepare_stanford_dataset.py --force'."
            ) from None
        array[index] = image_array(img)
    array.flush()
    return stop - start


def open_or_build(
    image_dir: Path,
    split: str,
    samples: Sequence[Annotation],
    preprocessing: Preprocessing,
    cache_dir: Path,
    workers: int = 1,
    progress: bool = True,
) -> ImageCache:
    """The cache of ``samples`` (in this order) under ``cache_dir``: reused when valid, else
    built with ``workers`` processes and a progress bar."""
    key = cache_key(image_dir, samples, preprocessing)
    height, width = preprocessing.image_size
    shape = (len(samples), height, width, preprocessing.channels)
    data_file = cache_dir / f"{split}-{key}.u8"
    header_file = cache_dir / f"{split}-{key}.json"
    if _read_valid(data_file, header_file, key, shape):
        return ImageCache(data_file, shape)
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
        # The processes of a multi-GPU run all ask at once: one builds, the others wait for
        # it and then read its cache.
        with FileLock(cache_dir / f".{split}-{key}.lock"):
            if not _read_valid(data_file, header_file, key, shape):
                log.info(
                    "building the %s image cache in %s (%d images)", split, cache_dir, len(samples)
                )
                header_file.unlink(missing_ok=True)  # no header: a build cut short is never read
                with replacing(data_file) as tmp:
                    _build(tmp, shape, image_dir, samples, preprocessing, workers, progress, split)
                header = {"key": key, "split": split, "shape": list(shape)}
                header["bytes"] = _nbytes(shape)
                header["checksum"] = _header_checksum(header)
                write_json_atomic(header_file, header)  # last: it makes the cache valid
    except OSError as err:
        raise UserError(
            f"the image cache could not be written to '{cache_dir}' ({err}). Free disk space "
            "or make the prepared data folder writable, or set cache_images: false."
        ) from None
    return ImageCache(data_file, shape)


def _build(
    tmp: Path,
    shape: tuple,
    image_dir: Path,
    samples: Sequence[Annotation],
    preprocessing: Preprocessing,
    workers: int,
    progress: bool,
    split: str,
) -> None:
    try:
        with tmp.open("wb") as handle:
            handle.truncate(_nbytes(shape))
        jobs = [(str(image_dir / s.fname), tuple(s.bbox)) for s in samples]
        chunk = 32
        chunks = [(i, min(i + chunk, len(jobs))) for i in range(0, len(jobs), chunk)]
        bar = tqdm(total=len(jobs), desc=f"caching {split}", unit="img", disable=not progress)
        init_args = (str(tmp), shape, jobs, preprocessing)
        if workers <= 1 or len(jobs) < _POOL_MIN_IMAGES:
            _init_worker(*init_args)
            for span in chunks:
                bar.update(_fill(span))
            _worker_state.clear()
        else:
            # fork: workers inherit the job list instead of re-importing torch each.
            context = multiprocessing.get_context("fork")
            with context.Pool(workers, initializer=_init_worker, initargs=init_args) as pool:
                for done in pool.imap_unordered(_fill, chunks):
                    bar.update(done)
        bar.close()
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
