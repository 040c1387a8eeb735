"""Reading the raw download's files: tar archives streamed member by member, and plain folders.

Member names are never used as paths to write to; a member whose name would leave the folder it
is extracted into is refused anyway, so that a hostile archive cannot smuggle in an image.
"""

from __future__ import annotations

import os
import tarfile
import uuid
import zlib
from collections.abc import Callable, Collection, Iterator
from pathlib import Path, PurePosixPath

from datasets.prepare.layouts import REDOWNLOAD
from utils.errors import UserError

# A folder that does not exist, so tarfile's filter judges a name by itself, never by links
# that happen to be on disk.
_NOWHERE = os.path.join(os.sep, f"nonexistent-{uuid.uuid4().hex}")


def base_name(name: str) -> str:
    """The file name of an archive member or annotation path, whichever separator it uses."""
    return PurePosixPath(name.replace("\\", "/")).name


def normalise(name: str) -> str:
    """``name`` with ``/`` separators and no leading ``./``."""
    name = name.replace("\\", "/")
    while name.startswith("./"):
        name = name[2:]
    return name


def _has_safe_name(member: tarfile.TarInfo) -> bool:
    """Whether the member's name stays inside the folder it is extracted into, unchanged."""
    name = member.name.replace("\\", "/")
    if not hasattr(tarfile, "data_filter"):  # Python before 3.10.12 and 3.11.4
        return not (name.startswith("/") or name[1:2] == ":" or ".." in name.split("/"))
    try:
        kept = tarfile.data_filter(member.replace(name=name, deep=False), _NOWHERE)
    except tarfile.FilterError:
        return False
    # The filter turns absolute names into relative ones rather than refusing them.
    return kept.name == name


def iter_archive(
    path: Path, wanted: Callable[[tarfile.TarInfo], bool]
) -> Iterator[tuple[tarfile.TarInfo, bytes | None]]:
    """Stream an archive once, yielding (member, bytes) for members ``wanted(member)`` accepts.

    Bytes are read only for regular files with safe names; other members come with None.
    Any damage to the archive becomes a UserError naming the file.
    """
    try:
        with tarfile.open(path, mode="r|*") as tar:
            for member in tar:
                if not wanted(member):
                    continue
                data = None
                if member.isreg() and _has_safe_name(member):
                    handle = tar.extractfile(member)
                    data = handle.read() if handle is not None else None
                yield member, data
    except (tarfile.TarError, EOFError, zlib.error, OSError) as err:
        raise UserError(
            f"{path} could not be read ({type(err).__name__}: {err}). The archive is corrupt or "
            f"truncated (an interrupted download?): {REDOWNLOAD}."
        ) from err


def read_bytes(path: Path) -> bytes:
    """The file's bytes; a UserError when it cannot be read."""
    try:
        return path.read_bytes()
    except OSError as err:
        raise UserError(f"Could not read {path} ({err}). Check its permissions.") from err


def read_named_files(path: Path, names: Collection[str]) -> dict[str, bytes]:
    """The files with these base names in a folder (top level) or anywhere in an archive.

    From an archive the first regular, safely named member of each name wins.
    """
    found: dict[str, bytes] = {}
    if path.is_dir():
        for name in names:
            if (path / name).is_file():
                found[name] = read_bytes(path / name)
        return found
    for member, data in iter_archive(path, lambda m: base_name(m.name) in names):
        if data is not None:
            found.setdefault(base_name(member.name), data)
    return found
