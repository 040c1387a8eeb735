"""Reading the raw download's files: tar archives streamed member by member, and plain folders.

Member names are never used as paths to write to; a member whose name would leave the folder it
is extracted into is refused anyway, so that a hostile archive cannot smuggle in an image.
"""

from __future__ import annotations

import os
import stat
import tarfile
import uuid
import zlib
from collections.abc import Callable, Collection, Iterator
from pathlib import Path, PurePosixPath

from datasets.prepare.layouts import REDOWNLOAD
from utils.errors import UserError

# ---- sizes and kinds of what is read -------------------------------------------------
# No Stanford Cars image or annotation file comes near this; a member declaring more (a sparse
# member of a few bytes can declare 40 GB) is refused before a byte of it is read.
MAX_MEMBER_BYTES = 256 * 2**20


def too_large(size: int) -> bool:
    """Whether a file or archive member of ``size`` bytes is too large to be an image or an
    annotation file."""
    return size > MAX_MEMBER_BYTES


def regular_file_problem(path: Path, follow_links: bool = False) -> str | None:
    """None when ``path`` is a regular file (not a link, unless ``follow_links``), else what it
    is instead.

    Files inside the raw folders are refused when they are links, like links inside archives:
    one to a file outside the raw folder (``/etc/passwd``, another dataset) must not be read
    into the dataset. The downloaded files themselves may be links (to a shared download)."""
    try:
        info = path.stat() if follow_links else path.lstat()
    except FileNotFoundError:
        return "missing"
    except OSError as err:
        return f"cannot be read ({err.strerror or err})"
    if stat.S_ISLNK(info.st_mode):
        return "a symbolic link (links are not followed)"
    if not stat.S_ISREG(info.st_mode):
        return "not a regular file (a folder, FIFO or device)"
    if too_large(info.st_size):
        return f"{info.st_size:,} bytes, over the {MAX_MEMBER_BYTES:,} an image file may have"
    return None


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

    Bytes are read only for regular files with safe names and sizes (``too_large``); other
    members come with None.
    Any damage to the archive becomes a UserError naming the file.
    """
    try:
        with tarfile.open(path, mode="r|*") as tar:
            for member in tar:
                if not wanted(member):
                    continue
                data = None
                if member.isreg() and _has_safe_name(member) and not too_large(member.size):
                    handle = tar.extractfile(member)
                    data = handle.read() if handle is not None else None
                yield member, data
    except PermissionError as err:
        raise UserError(
            f"{path} could not be opened ({err.strerror or err}). Give yourself read permission "
            f"on it (e.g. chmod u+r '{path}') and run again."
        ) from err
    except (tarfile.TarError, EOFError, zlib.error, OSError) as err:
        raise UserError(
            f"{path} could not be read ({type(err).__name__}: {err}). The archive is corrupt or "
            f"truncated (an interrupted download?): {REDOWNLOAD}."
        ) from err


def read_bytes(path: Path, follow_links: bool = True) -> bytes:
    """The file's bytes; a UserError when it cannot be read, is a link (unless
    ``follow_links``) or is too large."""
    problem = regular_file_problem(path, follow_links)
    if problem is not None:
        raise UserError(
            f"Could not read {path}: it is {problem}. Put the downloaded file itself there."
        )
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
            if (path / name).is_file() or (path / name).is_symlink():
                found[name] = read_bytes(path / name, follow_links=False)
        return found
    for member, data in iter_archive(path, lambda m: base_name(m.name) in names):
        if data is not None:
            found.setdefault(base_name(member.name), data)
    return found
