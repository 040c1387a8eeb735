"""Atomic writes: a reader never sees a half-written file."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import yaml


@contextlib.contextmanager
def replacing(
    path: str | Path,
    unwritable: Callable[[OSError], Exception] | None = None,
    *,
    suffix: str = ".tmp",
    fsync: bool = False,
) -> Iterator[Path]:
    """A new empty file beside ``path`` for the block to write: renamed over ``path``, with the
    usual permissions, when the block ends; removed when it raises. A reader sees the old file
    or the new one, never half of one. ``unwritable`` turns a failure to create the temporary
    file (no such folder, no permission) into the caller's own error. ``fsync`` flushes the new
    file to disk before the rename, so a crash just after it cannot leave an empty file."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    except OSError as err:
        if unwritable is None:
            raise
        raise unwritable(err) from None
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        if fsync:
            with tmp.open("rb+") as handle:
                os.fsync(handle.fileno())
        give_umask_permissions(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_bytes_atomic(path: str | Path, data: bytes) -> Path:
    """Write to a temporary file beside ``path``, then rename it into place."""
    with replacing(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def write_text_atomic(path: str | Path, text: str) -> Path:
    return write_bytes_atomic(path, text.encode("utf-8"))


def write_json_atomic(path: str | Path, data: Any) -> Path:
    return write_text_atomic(path, json.dumps(data, indent=2) + "\n")


def write_yaml_atomic(path: str | Path, data: Any) -> Path:
    return write_text_atomic(path, yaml.safe_dump(data, sort_keys=False, allow_unicode=True))


def give_umask_permissions(path: Path) -> None:
    """``mkstemp`` makes owner-only files; give a result file the usual permissions (umask)."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, 0o666 & ~umask)
