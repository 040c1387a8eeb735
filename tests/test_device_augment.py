"""augment_on: device: the kornia transforms draw per-image parameters from the same
distributions as the torchvision transforms the config names, checked over many draws."""

from __future__ import annotations

import kornia.augmentation as K
import pytest
import torch
import torchvision.transforms as T
from device_waits import DeviceWaits
from scipy.stats import ks_2samp

from configuration import TEMPLATE_PATH, load_config
from datasets.device_augment import SUPPORTED, DeviceAugmenter, device_transform
from datasets.preprocessing import Augmentation, Preprocessing
from datasets.stanford_data_module import StanfordCarsDataModule
from utils.errors import UserError

N = 3000
SIZE = 32
# Two samples from one distribution pass this comfortably; a wrong range fails it by far.
P_MIN = 1e-3


def _draws(augmentation: Augmentation, images: torch.Tensor | None = None) -> dict:
    module = device_transform(augmentation)
    torch.manual_seed(0)
    out = module(images if images is not None else torch.rand(N, 3, SIZE, SIZE))
    return {"out": out, **module._params}


def _same(device_values, cpu_values) -> None:
    device_values = torch.as_tensor(device_values, dtype=torch.float64).flatten()
    cpu_values = torch.as_tensor(cpu_values, dtype=torch.float64).flatten()
    assert ks_2samp(device_values.numpy(), cpu_values.numpy()).pvalue > P_MIN
    assert device_values.min() >= cpu_values.min() - 0.05 * cpu_values.std()
    assert device_values.max() <= cpu_values.max() + 0.05 * cpu_values.std()


def test_flip_rate_matches_torchvision():
    images = torch.arange(SIZE, dtype=torch.float32).expand(N, 3, SIZE, SIZE) / SIZE
    out = _draws(Augmentation("RandomHorizontalFlip", {"p": 0.3}), images)["out"]
    device_rate = (out[:, 0, 0, 0] > 0.5).float().mean().item()
    flip = T.RandomHorizontalFlip(p=0.3)
    torch.manual_seed(1)
    cpu_rate = sum(bool(flip(images[0])[0, 0, 0] > 0.5) for _ in range(N)) / N
    assert abs(device_rate - 0.3) < 0.04 and abs(cpu_rate - 0.3) < 0.04


def test_affine_ranges_match_torchvision():
    params = {"degrees": 25, "translate": [0.1, 0.2], "scale": [0.9, 1.1], "shear": 8}
    drawn = _draws(Augmentation("RandomAffine", params))
    torch.manual_seed(1)
    cpu = [
        T.RandomAffine.get_params(
            [-25.0, 25.0], [0.1, 0.2], [0.9, 1.1], [-8.0, 8.0, 0.0, 0.0], [SIZE, SIZE]
        )
        for _ in range(N)
    ]
    _same(drawn["angle"], [c[0] for c in cpu])
    # torchvision rounds translations to whole pixels; the device shifts by fractions of one
    _same(drawn["translations"][:, 0].round(), [c[1][0] for c in cpu])
    _same(drawn["translations"][:, 1].round(), [c[1][1] for c in cpu])
    _same(drawn["scale"][:, 0], [c[2] for c in cpu])
    _same(drawn["shear_x"], [c[3][0] for c in cpu])
    assert torch.all(drawn["shear_y"] == 0)


def test_color_jitter_factor_ranges_match_torchvision():
    ranges = {"brightness": 0.2, "contrast": 0.3, "saturation": 0.4, "hue": 0.1}
    drawn = _draws(Augmentation("ColorJitter", ranges))
    jitter = T.ColorJitter(**ranges)
    torch.manual_seed(1)
    cpu = [
        T.ColorJitter.get_params(jitter.brightness, jitter.contrast, jitter.saturation, jitter.hue)
        for _ in range(N)
    ]
    for position, key in enumerate(("brightness", "contrast", "saturation", "hue"), start=1):
        _same(drawn[f"{key}_factor"], [c[position] for c in cpu])


def test_erasing_rate_and_area_match_torchvision():
    params = {"p": 0.5, "scale": [0.02, 0.25], "ratio": [0.3, 3.3]}
    drawn = _draws(Augmentation("RandomErasing", params, on_tensor=True))
    applied = drawn["batch_prob"] > 0.5
    device_area = (drawn["widths"] * drawn["heights"])[applied] / SIZE**2
    image = torch.rand(3, SIZE, SIZE)
    torch.manual_seed(1)
    cpu_area = []
    for _ in range(N):
        _, _, h, w, _ = T.RandomErasing.get_params(image, (0.02, 0.25), (0.3, 3.3), [0.0])
        cpu_area.append(h * w / SIZE**2)
    assert abs(applied.float().mean().item() - 0.5) < 0.04
    _same(device_area, cpu_area)
    # the erased pixels are the value (0), the others untouched
    out = drawn["out"]
    assert (out == 0).flatten(1).float().mean(1)[applied].mean() > 0.05


def test_shape_dtype_range_and_normalize():
    augmentations = [
        Augmentation("RandomHorizontalFlip", {"p": 0.5}),
        Augmentation(
            "RandomAffine",
            {"degrees": 25, "translate": [0.1, 0.1], "scale": [0.9, 1.1], "shear": 8},
        ),
        Augmentation(
            "ColorJitter", {"brightness": 0.2, "contrast": 0.2, "saturation": 0.2, "hue": 0.1}
        ),
        Augmentation("RandomResizedCrop", {"size": [16, 16], "scale": [0.5, 1.0]}),
        Augmentation("RandomRotation", {"degrees": 10}),
        Augmentation("RandomPerspective", {"distortion_scale": 0.3, "p": 0.5}),
        Augmentation("RandomErasing", {"p": 0.5}, on_tensor=True),
    ]
    images = torch.randint(0, 256, (8, 3, SIZE, SIZE), dtype=torch.uint8)
    plain = DeviceAugmenter(Preprocessing(image_size=(SIZE, SIZE)), augmentations)
    out = plain(images, train=True)
    assert out.shape == (8, 3, 16, 16) and out.dtype == torch.float32
    assert out.min() >= 0 and out.max() <= 1
    pre = Preprocessing(image_size=(SIZE, SIZE), normalize=True, mean=(0.5,) * 3, std=(0.25,) * 3)
    gray = DeviceAugmenter(pre, [Augmentation("Grayscale", {"num_output_channels": 3})])
    evaluated = gray(images, train=False)  # validation: convert and normalise only
    torch.testing.assert_close(evaluated, (images.float() / 255 - 0.5) / 0.25)
    expected = T.Grayscale(3)(images.float() / 255)
    torch.testing.assert_close(gray(images, train=True), (expected - 0.5) / 0.25, atol=1e-5, rtol=0)


def test_same_seed_same_batch():
    augmenter = DeviceAugmenter(
        Preprocessing(image_size=(SIZE, SIZE)),
        [
            Augmentation("RandomAffine", {"degrees": 25, "translate": [0.1, 0.1]}),
            Augmentation("ColorJitter", {"brightness": 0.2, "hue": 0.1}),
            Augmentation("RandomErasing", {"p": 0.5}, on_tensor=True),
        ],
    )
    images = torch.randint(0, 256, (6, 3, SIZE, SIZE), dtype=torch.uint8)
    torch.manual_seed(7)
    first = augmenter(images)
    torch.manual_seed(7)
    assert torch.equal(first, augmenter(images))
    assert not torch.equal(first, augmenter(images))


def test_unsupported_transform_is_a_config_error(fast_config):
    with pytest.raises(UserError) as err:
        fast_config("augment_on=device", "image_augmentations={GaussianBlur: {kernel_size: 3}}")
    message = str(err.value)
    assert "GaussianBlur" in message and all(name in message for name in SUPPORTED)
    assert fast_config("augment_on=device").augment_on == "device"


def test_data_module_yields_uint8_and_finishes_on_the_device(prepared_data):
    pre = Preprocessing(image_size=(SIZE, SIZE), normalize=True, mean=(0.5,) * 3, std=(0.25,) * 3)
    data = StanfordCarsDataModule(
        prepared_data,
        pre,
        [Augmentation("RandomHorizontalFlip", {"p": 0.5})],
        batch_size=4,
        augment_on="device",
    )
    data.setup("fit")
    images, labels = next(iter(data.val_dataloader()))
    assert images.dtype == torch.uint8 and images.shape == (4, 3, SIZE, SIZE)
    images, _ = data.on_after_batch_transfer((images, labels), 0)  # no trainer: as training
    assert images.dtype == torch.float32
    # validation equals the CPU path: same resized pixels, ToTensor, Normalize
    cpu = StanfordCarsDataModule(prepared_data, pre, batch_size=4)
    cpu.setup("fit")
    cpu_images, _ = next(iter(cpu.val_dataloader()))
    uint8_images, _ = next(iter(data.val_dataloader()))
    torch.testing.assert_close(data.finish_batch(uint8_images, train=False), cpu_images)


# One configuration of each supported transform, the thesis's own among them.
EXAMPLES = {
    "RandomHorizontalFlip": {"p": 0.5},
    "RandomVerticalFlip": {"p": 0.5},
    "RandomAffine": {"degrees": 25, "translate": [0.1, 0.1], "scale": [0.9, 1.1], "shear": 8},
    "ColorJitter": {"brightness": 0.2, "contrast": 0.2, "saturation": 0.2, "hue": 0.1},
    "RandomErasing": {"p": 0.5, "scale": [0.02, 0.25]},
    "RandomResizedCrop": {"size": [16, 16], "scale": [0.5, 1.0]},
    "RandomRotation": {"degrees": 10},
    "RandomPerspective": {"distortion_scale": 0.3, "p": 0.5},
    "Grayscale": {"num_output_channels": 3},
    "RandomGrayscale": {"p": 0.3},
    "Normalize": {"mean": [0.5, 0.4, 0.3], "std": [0.2, 0.2, 0.2]},
}
THESIS = [
    Augmentation(name, EXAMPLES[name])
    for name in ("RandomHorizontalFlip", "RandomAffine", "ColorJitter")
] + [Augmentation("RandomErasing", EXAMPLES["RandomErasing"], on_tensor=True)]


def _waits(augmentations: list[Augmentation], channels: int = 3) -> list:
    probe = DeviceWaits()
    with probe:
        augmenter = DeviceAugmenter(Preprocessing(image_size=(SIZE, SIZE)), augmentations)
        shape = (8, channels, SIZE, SIZE)
        images = torch.randint(0, 256, shape, dtype=torch.uint8, device="meta")
        augmenter(images)  # the first batch builds the transforms for its device
        with probe.per_batch():
            out = augmenter(images)
            augmenter(images, train=False)
    values = probe.twin(out)  # what the device would hold: real values, computed on the CPU
    assert values.dtype == torch.float32 and torch.isfinite(values).all()
    assert values.shape[:2] == (8, channels)
    if all(a.name != "Normalize" for a in augmentations):
        assert values.min() >= 0 and values.max() <= 1
    return probe.waits


def test_every_supported_transform_has_an_example():
    assert set(EXAMPLES) == set(SUPPORTED)


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_no_transform_makes_the_host_wait_for_the_device(name):
    assert [str(w) for w in _waits([Augmentation(name, EXAMPLES[name])])] == []


@pytest.mark.parametrize("channels", [3, 1], ids=["rgb", "grayscale"])
def test_the_thesis_augmentations_never_wait_for_the_device(channels):
    assert [str(w) for w in _waits(THESIS, channels)] == []


def test_a_grayscale_batch_gets_brightness_and_contrast_only_as_in_torchvision():
    # torchvision's adjust_saturation and adjust_hue return a one-channel image unchanged
    jitter = device_transform(
        Augmentation("ColorJitter", {"brightness": 0.5, "saturation": 0.5, "hue": 0.2})
    )
    images = torch.rand(16, 1, SIZE, SIZE) * 0.5 + 0.1
    out = jitter(images)
    factors = jitter._params["brightness_factor"].view(-1, 1, 1, 1)
    torch.testing.assert_close(out, (images * factors).clamp(0, 1))


def test_the_probe_finds_kornias_waits_with_ranges_given_as_numbers():
    # The reason the transforms get their ranges as tensors on the device (device_augment.py).
    probe = DeviceWaits()
    with probe:
        affine = K.RandomAffine(degrees=25.0, translate=(0.1, 0.1), p=1.0).to("meta")
        images = torch.rand(4, 3, SIZE, SIZE, device="meta")
        with probe.per_batch():
            affine(images)
            images.sum().item()
    kinds = [(w.kind, w.where.split(":")[0]) for w in probe.waits]
    assert ("copy to host", "affine.py") in kinds and ("read", "test_device_augment.py") in kinds


def test_color_jitter_applies_its_steps_in_a_random_order():
    jitter = device_transform(Augmentation("ColorJitter", {"brightness": 0.5, "hue": 0.2}))
    images = torch.rand(4, 3, SIZE, SIZE)
    torch.manual_seed(0)
    orders = set()
    for _ in range(40):
        jitter(images)
        orders.add(jitter._last._fixed_order)
    assert orders == {(0, 3), (3, 0)}  # the zero ranges (contrast, saturation) left out


@pytest.mark.parametrize(
    ("ranges", "steps"),
    [
        ({"brightness": [0, 0]}, [0]),  # every image black: a step, as in torchvision
        ({"brightness": [1, 1], "hue": [0, 0]}, []),  # the neutral values: no step
        ({"contrast": 0.3, "hue": [-0.1, 0.1]}, [1, 3]),
    ],
)
def test_color_jitter_leaves_out_the_steps_torchvision_leaves_out(ranges, steps):
    assert device_transform(Augmentation("ColorJitter", ranges)).steps == steps
    jitter = T.ColorJitter(**ranges)
    taken = [jitter.brightness, jitter.contrast, jitter.saturation, jitter.hue]
    assert [i for i, value in enumerate(taken) if value is not None] == steps


@pytest.mark.parametrize("augment_on", ["cpu", "device"])
@pytest.mark.parametrize(
    ("settings", "accepted"),
    [
        (["image_augmentations={Grayscale: {num_output_channels: 1}}"], False),
        (["image_augmentations={Grayscale: {num_output_channels: 3}}"], True),
        (["convert_to_grayscale=true", "image_augmentations={Grayscale: {}}"], True),
        (
            [
                "convert_to_grayscale=true",
                "image_augmentations={Grayscale: {num_output_channels: 3}}",
            ],
            False,
        ),
        (["image_augmentations={RandomErasing: {}}"], False),  # a tensor transform on the image
    ],
)
def test_device_and_cpu_augmentation_accept_the_same_configs(augment_on, settings, accepted):
    # issue 23 A.15: Grayscale(num_output_channels=1) in an RGB run trained with augment_on:
    # device (Normalize broadcast it back to 3 channels) while augment_on: cpu refused it
    overrides = ["image_size=[32,32]", "augment_images=true", f"augment_on={augment_on}"]
    if accepted:
        load_config(TEMPLATE_PATH, [*overrides, *settings])
        return
    with pytest.raises(UserError, match="image_augmentations' / 'tensor_augmentations'"):
        load_config(TEMPLATE_PATH, [*overrides, *settings])
