"""A dry run of the first images and one training step, before a run folder exists; it leaves
the random-number state as it found it, so the run trains as if it had not run."""

from __future__ import annotations

import copy
import logging

import torch
from torch import nn

from datasets.stanford_data_module import StanfordCarsDataModule
from utils.errors import UserError
from workflows.training.resume import RandomState

log = logging.getLogger(__name__)


def preflight(
    data: StanfordCarsDataModule, net: nn.Module, loss_fn: nn.Module, loss_name: str, arch: str
) -> None:
    """``_dry_run``, leaving the random-number state as it found it."""
    state = RandomState().state_dict()
    try:
        _dry_run(data, net, loss_fn, loss_name, arch)
    finally:
        RandomState().load_state_dict(state)


def _dry_run(
    data: StanfordCarsDataModule, net: nn.Module, loss_fn: nn.Module, loss_name: str, arch: str
) -> None:
    """Run two training images and one validation image through their transforms, and one
    training step on a copy of the network, so that a setting that cannot work (a tensor
    transform among the image augmentations, an image too small for the architecture, a loss
    that does not take class labels) stops the run at once with a message."""
    data.setup("fit")
    train_set, valid_set = data.train_dataset, data.valid_dataset
    warn_small_data(data.batch_size, len(train_set))
    train_keys = "image_augmentations / tensor_augmentations / crop_to_bboxes"
    samples = []
    for dataset, index, keys in (
        (train_set, 0, train_keys),
        (train_set, len(train_set) - 1, train_keys),
        (valid_set, 0, "image_size / normalization"),
    ):
        try:
            samples.append(dataset[index])
        except UserError:
            raise
        except Exception as err:
            raise UserError(
                f"the {dataset.split} transforms fail on '{dataset.samples[index].fname}' "
                f"({type(err).__name__}: {err}). Check {keys}: image augmentations get PIL "
                "images (before ToTensor), tensor augmentations get tensors (after it)."
            ) from None
    # With augment_on: device the loader yields uint8; the device stage finishes the batch.
    images = data.finish_batch(torch.stack([image for image, _ in samples[:2]]), train=True)
    labels = torch.tensor([label for _, label in samples[:2]])
    probe = copy.deepcopy(net).train()
    try:
        loss_fn(probe(images), labels).backward()
    except Exception as err:
        raise UserError(
            f"one training step of '{arch}' on {list(images.shape[-2:])} images "
            f"with {loss_name} fails ({type(err).__name__}: {err}). Check image_size "
            "(227x227 suits every architecture) and loss_function (it must take logits and "
            "class indices, like CrossEntropyLoss or LabelSmoothingCrossEntropy)."
        ) from None
    # ---- batches of one image: BatchNorm cannot train on them, and would fail
    # only inside the first training step
    if data.batch_size == 1:
        try:
            loss_fn(probe(images[:1]), labels[:1]).backward()
        except Exception as err:
            raise UserError(
                f"key 'batch_size': '{arch}' cannot train on batches of 1 image "
                f"({type(err).__name__}: {str(err)[:120]}); its BatchNorm layers need at least 2. "
                "Use --set batch_size=2 or more."
            ) from None


def warn_small_data(batch_size: int, train_images: int) -> None:
    """A batch as large as the training set makes every epoch one optimizer step, which
    learns next to nothing (the template's 64 on a folder of a few dozen photos): warn, naming
    a batch size that gives a few steps per epoch."""
    if batch_size < train_images:
        return
    fits = 2
    while fits * 2 <= max(2, train_images // 4):
        fits *= 2
    log.warning(
        "batch_size %d is at or above the %d training images: every epoch is a single "
        "optimizer step, so the network learns next to nothing. Use a smaller batch, e.g. "
        "--set batch_size=%d (%d steps per epoch).",
        batch_size,
        train_images,
        fits,
        -(-train_images // fits),
    )
