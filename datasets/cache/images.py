"""A decoded-image cache: each image of a split once through the deterministic stages
([bbox crop / erase] -> resize -> [grayscale]) into one uint8 array on disk.

Files, beside the prepared data: ``<cache_dir>/<split>-<key>.u8`` (the raw ``(N, H, W, C)``
array) and ``<split>-<key>.json`` (its header, written last and atomically). The key is a hash
of everything that changes the pixels: image size, grayscale, crop and erase settings, and
every file's name, size, modification time, change time (ctime, which the system sets on every
write, replacement or time change, so an image replaced by another of the same size with its
old mtime changes the key) and bounding box. The header holds a CRC-32 of the array, checked
each time the cache is opened (one read of the file, at a few GB/s from the page cache); a
header that is missing, does not parse, fails its own checksum or does not match the array's
size or CRC-32 means the cache is rebuilt, never read. Loader workers map the array read-only,
so no process copies it.

A build (``datasets.cache.build``) writes ``.<split>-<key>.u8.<host>.<pid>.tmp`` first;
SIGTERM or Ctrl-C during it removes that file and ends its workers quietly, and a temp file of
a process that is gone (killed with SIGKILL, a crashed machine) is removed by the next open.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from filelock import FileLock
from PIL import Image

from datasets.cache.build import (
    build_array,
    remove_stale_temps,
    temp_path,
)
from datasets.labels import Annotation
from datasets.preprocessing import Preprocessing
from utils.errors import UserError
from utils.files import write_json_atomic

log = logging.getLogger(__name__)

CACHE_DIRNAME = ".cache"
# Bump when the way pixels are produced changes, so that old caches are not reused.
FORMAT_VERSION = 2  # 2: ctime in the key, the array's CRC-32 in the header
# Fewer images than this are decoded in this process: a pool costs more than it saves.
_POOL_MIN_IMAGES = 64


def array_image(array: np.ndarray) -> Image.Image:
    """The inverse of ``image_array``."""
    return Image.fromarray(array[:, :, 0] if array.shape[2] == 1 else array)


def cache_key(image_dir: Path, samples: Sequence[Annotation], preprocessing: Preprocessing) -> str:
    """A hash of everything that changes the cached pixels."""
    files = []
    for sample in samples:
        stat = (image_dir / sample.fname).stat()
        entry = [sample.fname, stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns]
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


_CRC_BLOCK = 16 * 2**20


def data_crc32(path: Path) -> str:
    """The CRC-32 of a file, read in blocks (zlib's runs at several GB/s)."""
    crc = 0
    with path.open("rb") as handle:
        while block := handle.read(_CRC_BLOCK):
            crc = zlib.crc32(block, crc)
    return f"{crc:08x}"


def _read_header(data_file: Path, header_file: Path, key: str, shape: tuple) -> dict | None:
    """The cache's header when it is whole and matches the key, the shape and the array's
    size; else None (no cache, or one cut short)."""
    try:
        header = json.loads(header_file.read_text())
        size = data_file.stat().st_size
    except (OSError, ValueError):
        return None
    valid = (
        isinstance(header, dict)
        and header.get("checksum") == _header_checksum(header)
        and header.get("key") == key
        and tuple(header.get("shape", ())) == shape
        and header.get("bytes") == size == _nbytes(shape)
    )
    return header if valid else None


def _read_valid(data_file: Path, header_file: Path, key: str, shape: tuple) -> bool:
    """Whether the cache can be read: a valid header and an array with its CRC-32."""
    header = _read_header(data_file, header_file, key, shape)
    if header is None:
        return False
    try:
        if data_crc32(data_file) == header.get("data_crc32"):
            return True
    except OSError:
        return False
    log.warning(
        "the image cache '%s' is damaged (its data no longer matches the CRC-32 written when it "
        "was built); it is rebuilt.",
        data_file,
    )
    return False


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
    seen = _header_text(header_file)
    if _read_valid(data_file, header_file, key, shape):
        remove_stale_temps(cache_dir)
        return ImageCache(data_file, shape)
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
        # The processes of a multi-GPU run all ask at once: one builds, the others wait for
        # it and then read its cache.
        with FileLock(cache_dir / f".{split}-{key}.lock"):
            remove_stale_temps(cache_dir, building=f"{split}-{key}")
            # Checked again only when another process wrote a header meanwhile.
            if _header_text(header_file) == seen or not _read_valid(
                data_file, header_file, key, shape
            ):
                log.info(
                    "building the %s image cache in %s (%d images)", split, cache_dir, len(samples)
                )
                header_file.unlink(missing_ok=True)  # no header: a build cut short is never read
                tmp = temp_path(cache_dir, f"{split}-{key}")
                _build(tmp, shape, image_dir, samples, preprocessing, workers, progress, split)
                header = {"key": key, "split": split, "shape": list(shape)}
                header["bytes"] = _nbytes(shape)
                header["data_crc32"] = data_crc32(tmp)
                header["checksum"] = _header_checksum(header)
                os.replace(tmp, data_file)
                write_json_atomic(header_file, header)  # last: it makes the cache valid
    except OSError as err:
        raise UserError(
            f"the image cache could not be written to '{cache_dir}' ({err}). Free disk space "
            "or make the prepared data folder writable, or set cache_images: false."
        ) from None
    return ImageCache(data_file, shape)


def _header_text(header_file: Path) -> str | None:
    try:
        return header_file.read_text()
    except (OSError, UnicodeDecodeError):
        return None


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
    pool = workers if len(samples) >= _POOL_MIN_IMAGES else 1
    build_array(tmp, shape, image_dir, samples, preprocessing, pool, progress, split)
