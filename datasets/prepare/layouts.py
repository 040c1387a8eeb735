"""Which raw layout a folder holds (one of the three Stanford Cars downloads, or a folder of
photos with one sub-folder per class), and where its files are."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from datasets.labels import SPLITS
from utils.errors import UserError

REDOWNLOAD = "download it again (a Stanford Cars mirror, e.g. Kaggle or Hugging Face)"

_UPDATED_FILES = "car_ims.tgz, cars_annos.mat and car_devkit.tgz"
_ORIGINAL_FILES = "cars_train.tgz, cars_test.tgz, car_devkit.tgz and cars_test_annos_withlabels.mat"
_EXTRACTED_FILES = (
    "a stanford_cars/ folder with cars_train/, cars_test/, devkit/ and "
    "cars_test_annos_withlabels.mat"
)


@dataclass
class Layout:
    """A recognised raw download: ``updated``, ``original`` or ``extracted``."""

    name: str
    description: str
    root: Path
    files: dict[str, Path]  # role -> path of what was found


def detect_layout(raw_dir: Path) -> Layout:
    """Recognise the download in ``raw_dir``; a UserError lists what was expected otherwise."""
    if not raw_dir.exists():
        raise UserError(
            f"The raw data folder {raw_dir} does not exist. Download Stanford Cars (the updated "
            f"release: {_UPDATED_FILES}; or the original release: {_ORIGINAL_FILES}; or "
            f"{_EXTRACTED_FILES}) into it, or point --raw-dir (stanford_raw_data_path in "
            f"config.yml) at the folder that holds them (or at {_PHOTO_FILES})."
        )
    if not raw_dir.is_dir():
        raise UserError(
            f"The raw data path {raw_dir} is not a folder. Point --raw-dir "
            "(stanford_raw_data_path in config.yml) at the folder that holds the downloaded files."
        )
    layout = _updated(raw_dir) or _original(raw_dir) or _extracted(raw_dir) or _photos(raw_dir)
    if layout is None:
        raise UserError(_unrecognised_message(raw_dir))
    return layout


def _updated(raw_dir: Path) -> Layout | None:
    annos = raw_dir / "cars_annos.mat"
    if not annos.is_file():
        return None
    if (raw_dir / "car_ims.tgz").is_file():
        files = {"images": raw_dir / "car_ims.tgz", "annos": annos}
        text = "car_ims.tgz, cars_annos.mat"
    elif (raw_dir / "car_ims").is_dir():
        files = {"images": _image_folder(raw_dir / "car_ims"), "annos": annos}
        text = "car_ims/, cars_annos.mat"
    else:
        return None
    devkit = _find_devkit(raw_dir)
    if devkit is not None:
        files["devkit"] = devkit
        text += ", car_devkit.tgz" if devkit.suffix == ".tgz" else ", devkit/"
    return Layout("updated", text, raw_dir, files)


def _original(raw_dir: Path) -> Layout | None:
    if not all((raw_dir / f"cars_{split}.tgz").is_file() for split in SPLITS):
        return None
    devkit = _find_devkit(raw_dir)
    if devkit is None:
        return None
    files = {
        "train_images": raw_dir / "cars_train.tgz",
        "test_images": raw_dir / "cars_test.tgz",
        "devkit": devkit,
    }
    text = "cars_train.tgz, cars_test.tgz, " + devkit.name
    labels = raw_dir / "cars_test_annos_withlabels.mat"
    if labels.is_file():
        files["test_labels"] = labels
        text += ", cars_test_annos_withlabels.mat"
    return Layout("original", text, raw_dir, files)


def _extracted(raw_dir: Path) -> Layout | None:
    for root in (raw_dir, raw_dir / "stanford_cars"):
        if all((root / name).is_dir() for name in ("cars_train", "cars_test", "devkit")):
            files = {
                "train_images": _image_folder(root / "cars_train"),
                "test_images": _image_folder(root / "cars_test"),
                "devkit": root / "devkit",
            }
            text = "cars_train/, cars_test/, devkit/"
            labels = root / "cars_test_annos_withlabels.mat"
            if labels.is_file():
                files["test_labels"] = labels
                text += ", cars_test_annos_withlabels.mat"
            return Layout("extracted", text, root, files)
    return None


# ---- a folder of photos, one sub-folder per class ---------------------------------
PHOTO_LAYOUTS = ("photos", "photos-split")
# Folder names of the Stanford downloads: a partial download must not pass for a photo folder.
_STANFORD_FOLDERS = frozenset({"car_ims", "cars_train", "cars_test", "devkit", "stanford_cars"})
_PHOTO_FILES = "a folder of photos with one sub-folder per class (<class>/*.jpg)"


def visible_subfolders(folder: Path) -> list[Path]:
    """The sub-folders of ``folder`` that are not hidden, sorted by name (links included)."""
    try:
        return sorted(
            (p for p in folder.iterdir() if not p.name.startswith(".") and p.is_dir()),
            key=lambda p: p.name,
        )
    except OSError:
        return []


def _photos(raw_dir: Path) -> Layout | None:
    """``<class>/`` folders (``photos``), or ``train/<class>/`` and ``test/<class>/`` folders
    (``photos-split``, split by the user)."""
    folders = visible_subfolders(raw_dir)
    names = {p.name for p in folders}
    if names & _STANFORD_FOLDERS:
        return None
    if {"train", "test"} <= names:
        split = {s: raw_dir / s for s in SPLITS}
        classes = {p.name for s in SPLITS for p in visible_subfolders(split[s])}
        if classes:
            text = f"photo folder split into train/ and test/, {len(classes)} class folders"
            return Layout("photos-split", text, raw_dir, split)
    if len(folders) < 2:
        return None
    text = f"photo folder, {len(folders)} class folders"
    return Layout("photos", text, raw_dir, {"classes": raw_dir})


def _find_devkit(raw_dir: Path) -> Path | None:
    if (raw_dir / "car_devkit.tgz").is_file():
        return raw_dir / "car_devkit.tgz"
    if (raw_dir / "devkit").is_dir():
        return raw_dir / "devkit"
    return None


def _image_folder(folder: Path) -> Path:
    """``folder``, or ``folder/<same name>`` when that holds the images (Kaggle mirrors)."""
    inner = folder / folder.name
    if inner.is_dir() and not any(folder.glob("*.jpg")):
        return inner
    return folder


def _unrecognised_message(raw_dir: Path) -> str:
    try:
        entries = sorted(p.name + ("/" if p.is_dir() else "") for p in raw_dir.iterdir())
    except OSError:
        entries = []
    if entries:
        shown = ", ".join(entries[:10]) + (", ..." if len(entries) > 10 else "")
        found = f"It holds: {shown}."
    else:
        found = "It is empty."
    return (
        f"No Stanford Cars download was recognised in {raw_dir}. {found} Expected one of: the "
        f"'updated' release ({_UPDATED_FILES}); the 'original' release ({_ORIGINAL_FILES}); "
        f"or torchvision's extracted folder ({_EXTRACTED_FILES}); or {_PHOTO_FILES}, at "
        "least two classes. Put the downloaded files or your photos there, or point --raw-dir "
        "(stanford_raw_data_path in config.yml) at the folder that holds them."
    )
