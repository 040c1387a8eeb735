"""cache_on_device: batches gathered from a copy of the image cache on the device equal the
loader workers' batches, train and validation, through a whole run; auto decides by the
device's free memory."""

from __future__ import annotations

import shutil
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from pytorch_lightning.trainer.states import RunningStage
from pytorch_lightning.utilities.data import _update_dataloader
from torch.utils.data import DistributedSampler

from configuration import TEMPLATE_PATH, load_config
from datasets.cache.device import DeviceImages, IndexDataset, fits_on_device, use_cache_on_device
from datasets.preprocessing import Augmentation, Preprocessing
from datasets.stanford_data import StanfordCarsDataset
from datasets.stanford_data_module import StanfordCarsDataModule
from utils.errors import UserError
from workflows.runs.metrics import read_metric_rows
from workflows.training.run import build_datamodule, run_training

PRE = Preprocessing(image_size=(24, 32), normalize=True, mean=(0.5,) * 3, std=(0.25,) * 3)
AUGS = (Augmentation("RandomHorizontalFlip", {"p": 0.5}),)
CUDA = torch.device("cuda")


@pytest.fixture
def data(tmp_path, prepared_data):
    """A writable copy of the miniature prepared data (the cache is written beside it)."""
    return shutil.copytree(prepared_data, tmp_path / "prepared")


def _module(data, cache_on_device, batch_size=5):
    module = StanfordCarsDataModule(
        data,
        PRE,
        AUGS,
        batch_size=batch_size,
        cache_images=True,
        augment_on="device",
        progress=False,
        cache_on_device=cache_on_device,
    )
    module.setup("fit")
    return module


def _batches(loader, seed):
    torch.manual_seed(seed)  # the same shuffle for both loaders
    return list(loader)


@pytest.mark.parametrize("split", ["train", "test"])
def test_gathered_batches_equal_the_loader_workers_batches(data, split):
    workers, gathered = _module(data, False), _module(data, True)
    loaders = "train_dataloader" if split == "train" else "val_dataloader"
    worker_loader = getattr(workers, loaders)()
    index_loader = getattr(gathered, loaders)()
    assert isinstance(index_loader.dataset, IndexDataset) and index_loader.num_workers == 0
    assert gathered.cache_on_device.active and not workers.cache_on_device.active
    worker_batches, index_batches = _batches(worker_loader, 3), _batches(index_loader, 3)
    assert len(worker_batches) == len(index_batches) > 1
    for module in (workers, gathered):  # what the hook reads of a trainer
        module.trainer = SimpleNamespace(training=split == "train")
    for (images, labels), (indices, index_labels) in zip(worker_batches, index_batches):
        gathered_images = gathered.cache_on_device.gather(split, indices)
        assert gathered_images.dtype == torch.uint8 and gathered_images.is_contiguous()
        assert torch.equal(gathered_images, images)
        assert torch.equal(index_labels, labels)
        # the hook finishes both alike (the same augmentations for the same seed)
        torch.manual_seed(5)
        finished, hook_labels = gathered.on_after_batch_transfer((indices, index_labels), 0)
        torch.manual_seed(5)
        expected, _ = workers.on_after_batch_transfer((images, labels), 0)
        assert torch.equal(finished, expected) and torch.equal(hook_labels, labels)


def test_under_ddp_each_process_gathers_the_images_its_sampler_picks(data):
    # Rank 1 of 2: Lightning re-creates the training loader with its DistributedSampler (as
    # it does under DDP), validation takes the data module's own sampler; both index loaders
    # are plain DataLoaders over a dataset as long as the split.
    workers, gathered = _module(data, False, batch_size=2), _module(data, True, batch_size=2)
    cpu = SimpleNamespace(root_device=torch.device("cpu"))
    for module in (workers, gathered):
        module.trainer = SimpleNamespace(strategy=cpu, world_size=2, global_rank=1, training=False)
    for split in ("train", "test"):
        if split == "train":
            loaders = []
            for module in (workers, gathered):
                loader = module.train_dataloader()
                sampler = DistributedSampler(loader.dataset, 2, 1, shuffle=True, seed=0)
                loaders.append(_update_dataloader(loader, sampler, mode=RunningStage.TRAINING))
        else:
            loaders = [workers.val_dataloader(), gathered.val_dataloader()]
        worker_batches, index_batches = list(loaders[0]), list(loaders[1])
        assert len(worker_batches) == len(index_batches) > 1
        size = len(gathered.annotations[split])
        assert 0 < sum(len(labels) for _, labels in index_batches) <= (size + 1) // 2  # its half
        for (images, labels), (indices, index_labels) in zip(worker_batches, index_batches):
            assert torch.equal(gathered.cache_on_device.gather(split, indices), images)
            assert torch.equal(index_labels, labels)


def test_device_copy_holds_the_cache_in_batch_layout(data):
    cache = _module(data, True).train_dataset.cache
    images = DeviceImages(cache)
    copy = images.copy_to(torch.device("cpu"))  # the path a GPU takes, on the CPU
    assert copy.shape == (len(cache), 3, 24, 32) and copy.dtype == torch.uint8
    indices = torch.tensor([4, 0, 4, len(cache) - 1])
    assert torch.equal(copy.index_select(0, indices), images.gather(indices))
    np.testing.assert_array_equal(copy[1].permute(1, 2, 0).numpy(), cache[1])


def test_auto_keeps_the_cache_off_a_gpu_without_room(data, monkeypatch):
    free = {"bytes": 0}
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (free["bytes"], 2**40))
    nbytes = 10_000
    free["bytes"] = 15_000  # the cache would take two thirds of it
    assert not fits_on_device(nbytes, CUDA)
    assert not use_cache_on_device("auto", nbytes, CUDA)
    assert use_cache_on_device(True, nbytes, CUDA)  # true copies it regardless
    free["bytes"] = 50_000
    assert use_cache_on_device("auto", nbytes, CUDA)
    assert use_cache_on_device("auto", nbytes, torch.device("cpu"))  # the mapped file itself
    assert not use_cache_on_device(False, nbytes, torch.device("cpu"))

    # the data module on a (pretended) GPU: its loaders go on reading the cache with workers
    free["bytes"] = 1_000
    module = _module(data, "auto")
    module.num_workers = 1
    module.trainer = SimpleNamespace(
        strategy=SimpleNamespace(root_device=CUDA), world_size=1, global_rank=0
    )
    loader = module.train_dataloader()
    assert isinstance(loader.dataset, StanfordCarsDataset) and loader.num_workers == 1
    assert module.cache_on_device.active is False


def test_cache_on_device_needs_the_cache_and_device_augmentation(tmp_path):
    with pytest.raises(UserError, match="cache_on_device"):
        load_config(TEMPLATE_PATH, ["cache_on_device=true"], data_path=str(tmp_path))
    config = load_config(
        TEMPLATE_PATH,
        ["cache_on_device=auto", "cache_images=true", "augment_on=device"],
        data_path=str(tmp_path),
    )
    assert config.cache_on_device == "auto"
    # auto is the default and does nothing without the cache and device augmentation
    assert load_config(TEMPLATE_PATH, [], data_path=str(tmp_path)).cache_on_device == "auto"


def test_build_datamodule_passes_the_setting(fast_config, data):
    config = fast_config(
        "cache_images=true", "augment_on=device", "cache_on_device=false", data_path=data
    )
    assert build_datamodule(config).cache_on_device.setting is False
    plain = build_datamodule(
        fast_config(
            "cache_on_device=true", "cache_images=true", "augment_on=device", data_path=data
        )
    )
    assert plain.cache_on_device.setting is True


def test_run_with_the_cache_on_device_equals_the_workers_run(fast_config, data, monkeypatch):
    # Same seed: the same shuffles and augmentations, so the same metrics epoch by epoch.
    common = (
        "image_size=[32,32]",
        "seed=11",
        "log_to_mlflow=false",
        "cache_images=true",
        "augment_on=device",
        "augment_tensors=true",
    )
    gathered = []
    gather = DeviceImages.gather
    monkeypatch.setattr(
        DeviceImages,
        "gather",
        lambda self, indices: gathered.append(len(indices)) or gather(self, indices),
    )
    rows, images = {}, {}
    for setting in ("false", "true"):
        result = run_training(
            fast_config(*common, f"cache_on_device={setting}", data_path=data),
            progress_bar=False,
        )
        rows[setting] = read_metric_rows(result.metrics_csv)
        images[setting] = sum(gathered)
    assert images["false"] == 0
    split_sizes = [len(a) for a in StanfordCarsDataModule(data).annotations.values()]
    assert images["true"] >= 2 * sum(split_sizes)  # every image of both epochs was gathered
    assert len(rows["true"]) == 2
    assert rows["true"] == rows["false"]
