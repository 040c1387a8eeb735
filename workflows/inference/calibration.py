"""Real images for int8 exports: calibration batches from the training split and the held-out
check against the checkpoint, both through the checkpoint's own evaluation preprocessing; the
staging folder an export is built in."""

from __future__ import annotations

import contextlib
import logging
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

from datasets.labels import SPLITS
from datasets.preprocessing import Preprocessing
from datasets.stanford_data import StanfordCarsDataset
from utils.errors import UserError

log = logging.getLogger(__name__)

CALIBRATION_IMAGES = 300  # ONNX Runtime's and PT2E's calibration settles within a few hundred
VERIFY_IMAGES = 200  # held-out (test split) images the int8 export is compared on
MIN_AGREEMENT = 0.9  # top-1 agreement with the checkpoint below which an export is not kept
CALIBRATION_SPLIT, VERIFY_SPLIT = SPLITS[0], SPLITS[1]  # "train", "test"


def split_images(
    data_path: str | Path, split: str, preprocessing: Preprocessing, limit: int, purpose: str
) -> tuple[np.ndarray, np.ndarray]:
    """Up to ``limit`` images of ``split`` (spread evenly over the sorted file names, so every
    class is represented), as a float32 ``[n, c, h, w]`` array, and their labels."""
    dataset = StanfordCarsDataset(data_path, split, preprocessing.for_evaluation())
    if len(dataset) == 0:
        raise UserError(
            f"the {split} split in '{data_path}' holds no images, and {purpose} needs some. "
            "Prepare the data again (python prepare_stanford_dataset.py) or pass another -d."
        )
    count = min(limit, len(dataset))
    if count < limit:
        log.info("%s: %d images (the %s split has no more)", purpose, count, split)
    indices = np.linspace(0, len(dataset) - 1, count).round().astype(int)
    items = [dataset[int(i)] for i in indices]
    images = torch.stack([image for image, _ in items]).numpy().astype(np.float32)
    return images, np.array([label for _, label in items])


def int8_images(
    data_path: str | Path, preprocessing: Preprocessing, calibration_images: int
) -> tuple[np.ndarray, np.ndarray]:
    """What an int8 export needs: up to ``calibration_images`` training images to calibrate on
    and the held-out images it is checked on."""
    calibration, _ = split_images(
        data_path, CALIBRATION_SPLIT, preprocessing, calibration_images, "int8 calibration"
    )
    held_out, _ = split_images(
        data_path, VERIFY_SPLIT, preprocessing, VERIFY_IMAGES, "the int8 check"
    )
    return calibration, held_out


def reference_logits(net: torch.nn.Module, images: np.ndarray, batch: int = 32) -> np.ndarray:
    """The checkpoint's (eager PyTorch, CPU) logits for ``images``."""
    with torch.inference_mode():
        return np.concatenate(
            [
                net(torch.from_numpy(images[i : i + batch])).numpy()
                for i in range(0, len(images), batch)
            ]
        )


def agreement(expected: np.ndarray, got: np.ndarray) -> tuple[float, float]:
    """Top-1 agreement and the largest absolute softmax-probability difference."""
    if got.shape != expected.shape:
        raise UserError(
            f"the exported model returned logits of shape {got.shape}, PyTorch {expected.shape}; "
            "the export is wrong and was not kept. Report the problem."
        )
    same = float((got.argmax(1) == expected.argmax(1)).mean())
    probs = torch.softmax(torch.from_numpy(expected).double(), 1)
    got_probs = torch.softmax(torch.from_numpy(got).double(), 1)
    return same, float((probs - got_probs).abs().max())


def check_agreement(same: float, max_prob_diff: float, count: int, what: str) -> None:
    """Refuse an export whose top-1 agrees with the checkpoint on too few held-out images."""
    if not same >= MIN_AGREEMENT:  # also catches NaN
        raise UserError(
            f"the {what} export agrees with the checkpoint's top-1 on only {same:.1%} of {count} "
            f"held-out images (needed: {MIN_AGREEMENT:.0%}; largest probability difference "
            f"{max_prob_diff:.3f}); it was not kept. Calibrate on more images "
            "(--calibration-images) or use the fp32 export."
        )


@contextlib.contextmanager
def staging_folder(path: Path) -> Iterator[Path]:
    """A temporary folder beside ``path`` for an export's intermediate files, removed on exit
    (the caller renames the finished file into place, so nothing half-written is left)."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        folder = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    except OSError as err:
        raise UserError(
            f"cannot write the export to '{path.parent}' ({err.strerror or err}). Pass a writable "
            "--output PATH."
        ) from None
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)
