"""``prepare_dataset``: a raw Stanford Cars download in, the prepared dataset out, step by step."""

from __future__ import annotations

import logging
import os
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path

from tqdm import tqdm

from datasets.labels import SPLITS
from datasets.prepare.annotations import ImageSource, read_raw_annotations
from datasets.prepare.images import Outcome, copy_images
from datasets.prepare.layouts import PHOTO_LAYOUTS, REDOWNLOAD, Layout, detect_layout
from datasets.prepare.output import (
    check_not_nested,
    existing_dataset,
    follow_output_link,
    make_work_folder,
    move_into_place,
    remove_stale_work_folders,
    write_labels,
    write_marker,
)
from datasets.prepare.photos import (
    DEFAULT_SEED,
    DEFAULT_TEST_FRACTION,
    DETAIL_KINDS,
    build_photo_dataset,
)
from utils.errors import UserError

logger = logging.getLogger(__name__)

_MAX_LISTED = 5


@dataclass
class PrepareReport:
    """What ``prepare_dataset`` did (or found already done, when ``skipped``)."""

    layout: str
    out_dir: Path
    num_train: int
    num_test: int
    num_classes: int
    missing: list[str] = field(default_factory=list)
    broken: list[str] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)
    skipped: bool = False
    # Photo folders: files left out or changed besides the three kinds above, by kind
    # ("not_images", "converted", "straightened", "renamed", "left_out_classes", ...).
    details: dict[str, list[str]] = field(default_factory=dict)


def prepare_dataset(
    raw_dir: str | Path,
    out_dir: str | Path,
    force: bool = False,
    progress: bool = True,
    test_fraction: float = DEFAULT_TEST_FRACTION,
    seed: int = DEFAULT_SEED,
) -> PrepareReport:
    """Prepare the raw Stanford Cars files (or a folder of photos) in ``raw_dir`` into
    ``out_dir``; ``test_fraction`` and ``seed`` split a photo folder that is not split yet.

    Does nothing (returns a report with ``skipped=True``) when ``out_dir`` already holds a
    complete prepared dataset, unless ``force``; then the new dataset replaces the old one once
    it is complete. Raises ``UserError`` for anything the user has to fix.
    """
    raw_dir = Path(raw_dir).expanduser()
    # Absolute and normalised, so that the work folder beside it has a real parent and name.
    out_dir = Path(os.path.abspath(Path(out_dir).expanduser()))
    out_dir = follow_output_link(out_dir)  # a linked output folder stays a link

    marker = existing_dataset(out_dir, force)
    if marker is not None:
        return _skipped_report(out_dir, marker)

    layout = detect_layout(raw_dir)
    check_not_nested(raw_dir, out_dir)
    if layout.name in PHOTO_LAYOUTS:
        return _prepare_photos(layout, raw_dir, out_dir, test_fraction, seed, progress)
    logger.info(
        "Found the '%s' Stanford Cars %s (%s) in %s",
        layout.name,
        "folder" if layout.name == "extracted" else "release",
        layout.description,
        layout.root,
    )
    class_names, sources = read_raw_annotations(layout)
    total = sum(len(source.annotations) for source in sources)
    logger.info(
        "Annotations: %d images (%d train, %d test), %d classes",
        total,
        sum(ann.split == "train" for s in sources for ann in s.annotations),
        sum(ann.split == "test" for s in sources for ann in s.annotations),
        len(class_names),
    )

    remove_stale_work_folders(out_dir)
    work = make_work_folder(out_dir)
    try:
        build = work / out_dir.name
        outcome = Outcome()
        with tqdm(total=total, desc="Preparing images", unit="img", disable=not progress) as bar:
            for source in sources:
                copy_images(source, build, outcome, bar)
        report = _finish(layout, sources, class_names, outcome, build, out_dir, raw_dir)
        move_into_place(work, out_dir)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    _log_problems(report)
    return report


def _skipped_report(out_dir: Path, marker: dict) -> PrepareReport:
    return PrepareReport(
        layout=str(marker.get("layout", "?")),
        out_dir=out_dir,
        num_train=int(marker.get("num_train", 0)),
        num_test=int(marker.get("num_test", 0)),
        num_classes=int(marker.get("num_classes", 0)),
        missing=list(marker.get("missing", [])),
        broken=list(marker.get("broken", [])),
        refused=list(marker.get("refused", [])),
        skipped=True,
        details=dict(marker.get("details", {})),
    )


# ---- a folder of photos -------------------------------------------------------------
def _prepare_photos(
    layout: Layout,
    raw_dir: Path,
    out_dir: Path,
    test_fraction: float,
    seed: int,
    progress: bool,
) -> PrepareReport:
    logger.info("Found a %s in %s", layout.description, layout.root)
    remove_stale_work_folders(out_dir)
    work = make_work_folder(out_dir)
    try:
        build = work / out_dir.name
        photos = build_photo_dataset(layout, work, build, test_fraction, seed, progress)
        for split in SPLITS:
            if not photos.rows[split]:
                raise UserError(
                    f"No usable {split} images in the photo folder {layout.root}. Put at least "
                    f"one image of each class in {split}/<class>/."
                )
            write_labels(build, split, photos.rows[split], photos.class_names)
        report = PrepareReport(
            layout=layout.name,
            out_dir=out_dir,
            num_train=len(photos.rows["train"]),
            num_test=len(photos.rows["test"]),
            num_classes=len(photos.class_names),
            broken=photos.broken,
            refused=photos.refused,
            details=photos.details,
        )
        fields = asdict(report)
        del fields["skipped"]
        if layout.name == "photos":
            fields.update(test_fraction=test_fraction, seed=seed)
        write_marker(build, fields, raw_dir=raw_dir, out_dir=out_dir, found=layout.description)
        move_into_place(work, out_dir)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    _log_problems(report, what="file(s)")
    for kind, (text, left_out) in DETAIL_KINDS.items():
        names = report.details.get(kind, [])
        if names:
            shown = "; ".join(names[:_MAX_LISTED]) + ("; ..." if len(names) > _MAX_LISTED else "")
            logger.log(
                logging.WARNING if left_out else logging.INFO,
                "%s: %d (%s)",
                text,
                len(names),
                shown,
            )
    return report


def _finish(
    layout: Layout,
    sources: list[ImageSource],
    class_names: list[str],
    outcome: Outcome,
    build: Path,
    out_dir: Path,
    raw_dir: Path,
) -> PrepareReport:
    """Record missing images, write the CSVs and (last) the marker; return the report."""
    for source in sources:
        for ann in source.annotations:
            if not outcome.seen(ann):
                outcome.problem(ann, "missing", f"not in {source.path.name}")
    missing, broken, refused = (outcome.names(k) for k in ("missing", "broken", "refused"))

    counts = {}
    for split in SPLITS:
        rows = [
            ann
            for s in sources
            for ann in s.annotations
            if ann.split == split and ann.fname in outcome.written[split]
        ]
        if not rows:
            raise UserError(
                f"No usable {split} images in {layout.root}: {len(missing)} missing, "
                f"{len(broken)} broken and {len(refused)} refused in total (e.g. "
                f"{', '.join((missing + broken + refused)[:3])}). The image files do not match "
                f"the annotations or are damaged: {REDOWNLOAD}."
            )
        counts[split] = len(rows)
        write_labels(build, split, rows, class_names)

    report = PrepareReport(
        layout=layout.name,
        out_dir=out_dir,
        num_train=counts["train"],
        num_test=counts["test"],
        num_classes=len(class_names),
        missing=missing,
        broken=broken,
        refused=refused,
    )
    fields = asdict(report)
    del fields["skipped"]
    write_marker(build, fields, raw_dir=raw_dir, out_dir=out_dir, found=layout.description)
    return report


def _log_problems(report: PrepareReport, what: str = "annotated images") -> None:
    for kind, names, why in (
        ("missing", report.missing, "not found where the annotations say"),
        ("broken", report.broken, "do not decode"),
        ("refused", report.refused, "links or unsafe archive members, not followed"),
    ):
        if names:
            shown = "; ".join(names[:_MAX_LISTED]) + ("; ..." if len(names) > _MAX_LISTED else "")
            logger.warning("%d %s left out as %s (%s): %s", len(names), what, kind, why, shown)
