import csv
import shutil

import pytest
import torch
import torchvision.transforms as T
from PIL import Image

from configuration import TEMPLATE_PATH, load_config
from datasets.labels import class_names_from, read_annotations
from datasets.preprocessing import Preprocessing
from datasets.sample_data import class_color
from datasets.stanford_data import StanfordCarsDataset
from datasets.stanford_data_module import StanfordCarsDataModule
from datasets.transforms import crop_to_bbox, load_image
from utils.errors import UserError
from workflows.training.run import build_datamodule


def file_modes(data_dir, split):
    modes = {}
    for path in (data_dir / split).iterdir():
        with Image.open(path) as img:
            modes[path.name] = img.mode
    return modes


def test_every_image_loads_as_rgb_including_grayscale_and_cmyk(prepared_data):
    modes = file_modes(prepared_data, "train")
    assert {"L", "CMYK"} <= set(modes.values())  # the sample has both, like the real data
    for name in modes:
        assert load_image(prepared_data / "train" / name).mode == "RGB"


def test_bbox_crop_uses_each_images_own_box(prepared_data):
    dataset = StanfordCarsDataset(
        prepared_data, "train", Preprocessing(image_size=(16, 16), crop_to_bboxes=True)
    )
    modes = file_modes(prepared_data, "train")
    checked = 0
    for index, sample in enumerate(dataset.samples):
        if modes[sample.fname] != "RGB":
            continue
        image, label = dataset[index]
        assert label == sample.label
        expected = torch.tensor(class_color(label), dtype=torch.float32).view(3, 1, 1) / 255
        inner = image[:, 3:13, 3:13]  # JPEG edges blur into the background; the inside must not
        assert (inner - expected).abs().mean() < 0.06, sample.fname
        checked += 1
    assert checked >= 10


def test_without_crop_the_background_shows(prepared_data):
    dataset = StanfordCarsDataset(prepared_data, "train", Preprocessing(image_size=(32, 32)))
    deviations = []
    for index in range(len(dataset)):
        image, label = dataset[index]
        expected = torch.tensor(class_color(label), dtype=torch.float32).view(3, 1, 1) / 255
        deviations.append((image - expected).abs().mean().item())
    assert max(deviations) > 0.1


def test_erase_background_pastes_crop_centred_on_white_canvas():
    img = Image.new("RGB", (100, 60), (10, 20, 30))
    img.paste((200, 0, 0), (10, 10, 30, 50))
    out = crop_to_bbox(img, (10, 10, 30, 50), erase_background=True)
    assert out.size == (100, 60)
    assert out.getpixel((50, 30)) == (200, 0, 0)  # the crop, centred
    assert out.getpixel((2, 2)) == (255, 255, 255)  # white where the background was
    assert crop_to_bbox(img, (10, 10, 30, 50)).size == (20, 40)


def test_labels_and_boxes_are_looked_up_by_file_name(prepared_data, tmp_path):
    data = tmp_path / "shuffled"
    shutil.copytree(prepared_data, data)
    csv_path = data / "train_labels.csv"
    with csv_path.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    fieldnames = list(rows[0])
    with csv_path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=fieldnames)
        writer.writeheader()
        writer.writerows(reversed(rows))  # row order no longer matches file order
    annotations = read_annotations(data, "train")
    for row in rows:
        ann = annotations[row["image_fname"]]
        assert ann.label == int(row["class"]) - 1
        assert ann.bbox == tuple(
            float(row[k]) for k in ("bbox_x1", "bbox_y1", "bbox_x2", "bbox_y2")
        )


def test_transform_order_follows_the_thesis(prepared_data):
    config = load_config(
        TEMPLATE_PATH,
        [
            "augment_tensors=True",
            "convert_to_grayscale=True",
            "image_size=[32,32]",
            "num_workers=0",
        ],
        data_path=str(prepared_data),
    )
    data = build_datamodule(config)
    data.setup("fit")
    train_stages = [type(t).__name__ for t in data.train_dataset.transform.transforms]
    assert train_stages == [
        "Resize",
        "Grayscale",
        "RandomHorizontalFlip",
        "RandomAffine",
        "ColorJitter",
        "ToTensor",
        "RandomErasing",
        "Normalize",
    ]
    valid_stages = [type(t).__name__ for t in data.valid_dataset.transform.transforms]
    assert valid_stages == ["Resize", "Grayscale", "ToTensor", "Normalize"]
    assert not data.valid_dataset.preprocessing.crop_to_bboxes
    image, _ = data.train_dataset[0]
    assert image.shape == (1, 32, 32)
    normalize = data.train_dataset.transform.transforms[-1]
    assert isinstance(normalize, T.Normalize) and normalize.mean == [0.4627]


def test_validation_never_crops_even_when_training_does(prepared_data):
    spec = Preprocessing(image_size=(16, 16), crop_to_bboxes=True, erase_background=True)
    data = StanfordCarsDataModule(prepared_data, spec)
    data.setup("fit")
    assert data.train_dataset.preprocessing.crop_to_bboxes
    assert not data.valid_dataset.preprocessing.crop_to_bboxes
    assert not data.valid_dataset.preprocessing.erase_background


def test_number_of_classes_and_names_come_from_the_data(prepared_data):
    data = StanfordCarsDataModule(prepared_data)
    assert data.num_classes == 3
    assert data.class_names[0].startswith("Sample Make")


def test_class_id_gap_is_a_user_error(prepared_data, tmp_path):
    data = tmp_path / "gap"
    shutil.copytree(prepared_data, data)
    for split in ("train", "test"):
        path = data / f"{split}_labels.csv"
        text = path.read_text().replace(",3,", ",5,")
        path.write_text(text)
    with pytest.raises(UserError, match="without gaps"):
        class_names_from([read_annotations(data, "train"), read_annotations(data, "test")])


def test_missing_prepared_data_says_how_to_prepare(tmp_path):
    with pytest.raises(UserError, match="prepare_stanford_dataset.py"):
        StanfordCarsDataModule(tmp_path / "nothing")


def test_missing_image_is_a_user_error(prepared_data, tmp_path):
    data = tmp_path / "missing"
    shutil.copytree(prepared_data, data)
    next((data / "test").iterdir()).unlink()
    with pytest.raises(UserError, match="missing"):
        StanfordCarsDataset(data, "test")


class _FakeTrainer:
    """What the data module asks of its Trainer under DDP."""

    def __init__(self, world_size: int, global_rank: int) -> None:
        self.world_size, self.global_rank, self.training = world_size, global_rank, False


@pytest.mark.parametrize("world_size", [2, 4])
def test_ddp_validation_sees_each_image_exactly_once(prepared_data, world_size):
    seen = []
    for rank in range(world_size):
        data = StanfordCarsDataModule(prepared_data, Preprocessing(image_size=(16, 16)))
        data.setup("fit")
        data.trainer = _FakeTrainer(world_size, rank)
        loader = data.val_dataloader()
        assert loader.sampler.num_replicas == world_size  # Lightning keeps a DistributedSampler
        seen += list(loader.sampler)
        assert data.train_dataloader().sampler.__class__.__name__ == "RandomSampler"
    total = len(data.valid_dataset)
    assert total % world_size != 0  # a split the padding sampler would repeat images of
    assert sorted(seen) == list(range(total))


def test_one_process_validates_in_order_without_a_distributed_sampler(prepared_data):
    data = StanfordCarsDataModule(prepared_data, Preprocessing(image_size=(16, 16)))
    data.setup("fit")
    data.trainer = _FakeTrainer(1, 0)
    assert list(data.val_dataloader().sampler) == list(range(len(data.valid_dataset)))
