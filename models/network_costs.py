"""Size, cost and speed of the architectures: the work behind ``model_summary.py``.

For each architecture: trainable parameters, multiply-adds for one image (counted with
``torch.utils.flop_counter.FlopCounterMode``; MACs = FLOPs / 2, so only convolutions and matrix
products count, as in the papers) and the median forward latency at batch size 1 (eval mode,
no autograd) on this machine's CPU.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from models.arch_dict import ARCHITECTURES, architecture_options, build_network, count_parameters
from utils.errors import UserError
from utils.timer import median_ms, one_torch_thread


def count_gmacs(net: nn.Module, image: torch.Tensor) -> float:
    """Multiply-adds (in billions) of one forward pass of ``image`` (batch of one)."""
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        net(image)
    return counter.get_total_flops() / 2 / 1e9


def measure_latency_ms(net: nn.Module, image: torch.Tensor, repeats: int) -> float:
    """Median wall time of ``repeats`` forward passes on one CPU thread, in milliseconds."""
    with torch.no_grad(), one_torch_thread():
        return median_ms(lambda: net(image), repeats, warmup=1)


def summarize(
    names: Iterable[str],
    num_classes: int = 196,
    img_channels: int = 3,
    image_size: tuple[int, int] | list[int] = (227, 227),
    options: Mapping[str, object] | None = None,
    repeats: int = 10,
) -> list[dict]:
    """One dict per architecture: ``architecture``, ``params``, ``gmacs``, ``latency_ms``.

    ``options`` (architecture options) go to the architectures that take them and are ignored
    for the others. ``repeats`` = 0 skips the latency measurement (``latency_ms`` is then
    None). Raises UserError for an unknown name, a non-positive size or an image too small for
    an architecture.
    """
    names = list(names)
    height, width = _check_sizes(num_classes, img_channels, image_size, repeats)
    options = {k: v for k, v in (options or {}).items() if v is not None}
    rows = []
    for name in names:
        accepted = architecture_options(name)  # UserError for an unknown name
        net = build_network(
            name, num_classes, img_channels, **{k: v for k, v in options.items() if k in accepted}
        )
        net.eval()
        image = torch.randn(1, img_channels, height, width)
        try:
            gmacs = count_gmacs(net, image)
            latency = measure_latency_ms(net, image, repeats) if repeats else None
        except RuntimeError as err:
            raise UserError(
                f"architecture '{name}' cannot process {height}x{width} images ({err}). "
                "Use a larger --image-size (227 227 suits every architecture)."
            ) from None
        rows.append(
            {
                "architecture": name,
                "params": count_parameters(net),
                "gmacs": gmacs,
                "latency_ms": latency,
            }
        )
    return rows


def format_table(rows: list[dict]) -> str:
    """Plain-text table of ``summarize`` rows."""
    header = ("architecture", "network", "params", "GMACs", "latency ms")
    lines = [
        (
            row["architecture"],
            _description(row["architecture"]),
            f"{row['params']:,}",
            f"{row['gmacs']:.3f}",
            "-" if row["latency_ms"] is None else f"{row['latency_ms']:.1f}",
        )
        for row in rows
    ]
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *lines)]
    align = ("<", "<", ">", ">", ">")
    return "\n".join(
        "  ".join(f"{cell:{a}{w}}" for cell, a, w in zip(line, align, widths))
        for line in [header, *lines]
    )


def _description(name: str) -> str:
    arch = ARCHITECTURES.get(name)
    return arch.description if arch is not None else ""


def _check_sizes(num_classes: int, img_channels: int, image_size, repeats: int) -> tuple[int, int]:
    if len(image_size) != 2:
        raise UserError(f"image size must be two numbers, height and width; got {image_size}.")
    for label, value in (
        ("number of classes", num_classes),
        ("number of image channels", img_channels),
        ("image height", image_size[0]),
        ("image width", image_size[1]),
    ):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise UserError(f"the {label} must be a positive integer, got {value!r}. Fix it.")
    if repeats < 0:
        raise UserError(f"repeats must be 0 or more, got {repeats}.")
    return int(image_size[0]), int(image_size[1])
