"""Copying the annotated images, bytes unchanged, from an archive or folder into the build folder.

Every image is decoded once on the way; those that are missing, do not decode or come from a
refused archive member are recorded, not copied.
"""

from __future__ import annotations

import errno
import io
import logging
import tarfile
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image
from tqdm import tqdm

from datasets.labels import SPLITS
from datasets.prepare.annotations import ImageSource, RawAnnotation
from datasets.prepare.archives import (
    base_name,
    iter_archive,
    normalise,
    regular_file_problem,
    too_large,
)
from utils.errors import UserError

logger = logging.getLogger(__name__)


@dataclass
class Outcome:
    """Per-image results while copying: written base names per split, and problems."""

    written: dict[str, set[str]] = field(default_factory=lambda: {s: set() for s in SPLITS})
    problems: dict[tuple[str, str], tuple[str, str]] = field(default_factory=dict)

    def ok(self, ann: RawAnnotation) -> None:
        self.written[ann.split].add(ann.fname)
        self.problems.pop((ann.split, ann.fname), None)

    def problem(self, ann: RawAnnotation, kind: str, detail: str) -> None:
        """Record a ``missing``, ``broken`` or ``refused`` image unless a good copy was taken."""
        if ann.fname not in self.written[ann.split]:
            self.problems[(ann.split, ann.fname)] = (kind, ann.source)
            logger.debug("%s image %s: %s", kind, ann.source, detail)

    def seen(self, ann: RawAnnotation) -> bool:
        key = (ann.split, ann.fname)
        return ann.fname in self.written[ann.split] or key in self.problems

    def names(self, kind: str) -> list[str]:
        """Sorted source paths of the images with this kind of problem."""
        return sorted(source for k, source in self.problems.values() if k == kind)


def copy_images(source: ImageSource, build: Path, outcome: Outcome, bar: tqdm) -> None:
    """Copy the source's annotated images to ``build/<split>/<fname>``, one bar step each."""
    if source.is_archive:
        _copy_from_archive(source, build, outcome, bar)
    else:
        _copy_from_folder(source, build, outcome, bar)


def _check_image(data: bytes) -> str | None:
    """None when ``data`` decodes as an image, else what went wrong."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.load()
    except Exception as err:  # any decoder failure means the image is unusable
        return f"{type(err).__name__}: {err}"
    return None


def _store(ann: RawAnnotation, data: bytes, build: Path, outcome: Outcome) -> None:
    problem = _check_image(data)
    if problem is not None:
        outcome.problem(ann, "broken", problem)
        return
    target = build / ann.split / ann.fname
    try:
        target.write_bytes(data)
    except OSError as err:
        raise UserError(f"Could not write {target} ({err}). {write_fix(err)}") from err
    outcome.ok(ann)


def write_fix(err: OSError) -> str:
    """What to do about a failed write, by its cause (not always "free disk space")."""
    if err.errno == errno.ENAMETOOLONG:
        return (
            "The file name is too long for the output folder's file system; choose an output "
            "folder (--out-dir) on a file system that allows longer names, or shorten the name."
        )
    if err.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return "The output folder is not writable; choose another one (--out-dir)."
    if err.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)):
        return "Free some disk space or choose another output folder (--out-dir), then run again."
    return "Check the output folder (--out-dir), then run again."


def _copy_from_archive(source: ImageSource, build: Path, outcome: Outcome, bar: tqdm) -> None:
    by_name = {ann.fname: ann for ann in source.annotations}
    exact_done: set[str] = set()

    def wanted(member: tarfile.TarInfo) -> bool:
        return not member.isdir() and base_name(member.name) in by_name

    for member, data in iter_archive(source.path, wanted):
        ann = by_name[base_name(member.name)]
        first = not outcome.seen(ann)
        exact = normalise(member.name) == ann.source
        if member.issym() or member.islnk():
            outcome.problem(ann, "refused", f"archive member {member.name} is a link")
        elif not member.isreg():
            outcome.problem(ann, "refused", f"archive member {member.name} is not a file")
        elif too_large(member.size):
            outcome.problem(ann, "refused", f"archive member {member.name} is too large")
        elif data is None:  # iter_archive reads no bytes of a regular file with an unsafe name
            outcome.problem(ann, "refused", f"unsafe archive member name {member.name}")
        elif ann.fname in exact_done or (ann.fname in outcome.written[ann.split] and not exact):
            pass  # a better copy of this image was already taken
        else:
            _store(ann, data, build, outcome)
            if exact:
                exact_done.add(ann.fname)
        if first:
            bar.update(1)


def _copy_from_folder(source: ImageSource, build: Path, outcome: Outcome, bar: tqdm) -> None:
    for ann in source.annotations:
        path = source.path / ann.fname
        problem = regular_file_problem(path)
        if problem is None:
            try:
                data = path.read_bytes()
            except OSError as err:
                outcome.problem(ann, "broken", f"unreadable: {err}")
            else:
                _store(ann, data, build, outcome)
        elif problem != "missing":  # links, FIFOs, devices: refused like such archive members
            outcome.problem(ann, "refused", f"{path} is {problem}")
        bar.update(1)
