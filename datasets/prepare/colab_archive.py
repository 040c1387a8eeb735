"""The prepared dataset packed for Colab (thesis 3.2): ``input/stanford.tar.gz`` holding
``stanford/train/``, ``stanford/test/``, ``stanford/train_labels.csv`` and
``stanford/test_labels.csv``. ``train_colab.ipynb`` copies it from Drive to the Colab disk and
unpacks it there, because reading images one by one from Drive is many times slower."""

from __future__ import annotations

import logging
import os
import tarfile
from pathlib import Path

from datasets.labels import SPLITS, labels_csv
from utils.errors import UserError
from utils.files import replacing

logger = logging.getLogger(__name__)

DEFAULT_ARCHIVE = Path("input") / "stanford.tar.gz"
ARCHIVE_ROOT = "stanford"
# JPEGs do not shrink under gzip; the fastest level keeps packing 1.9 GB quick.
_COMPRESSLEVEL = 1


def archive_entries(prepared_dir: str | Path) -> list[Path]:
    """The four entries of a prepared dataset that go into the archive; a UserError naming
    what is missing when ``prepared_dir`` is not a prepared dataset."""
    prepared_dir = Path(prepared_dir)
    entries = [prepared_dir / split for split in SPLITS]
    entries += [labels_csv(prepared_dir, split) for split in SPLITS]
    missing = [entry.name for entry in entries if not entry.exists()]
    if missing:
        raise UserError(
            f"{prepared_dir} is not a prepared dataset ({', '.join(missing)} missing), so there "
            "is nothing to archive. Prepare it first: python prepare_stanford_dataset.py."
        )
    return entries


def write_colab_archive(
    prepared_dir: str | Path, archive_path: str | Path = DEFAULT_ARCHIVE
) -> Path:
    """Pack ``prepared_dir`` as ``archive_path`` (a .tar.gz with one top-level ``stanford/``
    folder, whatever the prepared folder is called; a folder, or a path ending in ``/``, gets
    ``stanford.tar.gz`` in it); written beside, then renamed into place."""
    entries = archive_entries(prepared_dir)
    # A trailing slash says "a folder" also when it does not exist yet (Path drops the slash).
    as_folder = str(archive_path).endswith(tuple(filter(None, ("/", os.sep, os.altsep))))
    archive_path = Path(archive_path)
    if as_folder or archive_path.is_dir():  # a folder to put it in
        archive_path = archive_path / DEFAULT_ARCHIVE.name

    def unwritable(err: OSError) -> UserError:
        return UserError(
            f"Could not write the archive {archive_path} ({err}). Choose a writable place with "
            "--archive PATH."
        )

    try:
        with (
            replacing(archive_path, unwritable) as tmp,
            tarfile.open(tmp, mode="w:gz", compresslevel=_COMPRESSLEVEL) as tar,
        ):
            for entry in entries:
                tar.add(entry, arcname=f"{ARCHIVE_ROOT}/{entry.name}", filter=_plain_only)
    except OSError as err:
        raise UserError(
            f"Could not write the archive {archive_path} ({err}). Free some disk space or "
            "choose another place with --archive PATH."
        ) from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    logger.info("Packed %s as %s (top-level folder %s/)", prepared_dir, archive_path, ARCHIVE_ROOT)
    return archive_path


def _plain_only(member: tarfile.TarInfo) -> tarfile.TarInfo | None:
    """Folders and regular files only, without owner names: links are left out."""
    if not (member.isdir() or member.isreg()):
        logger.warning("Leaving %s out of the archive: not a regular file", member.name)
        return None
    member.uid = member.gid = 0
    member.uname = member.gname = ""
    return member
