"""GhostNet as the thesis trained it: its blocks, its sizes, its options."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from models.arch_dict import count_parameters
from models.architectures.ghostnet import (
    GHOSTNET_CONFIG,
    GhostBottleneck,
    GhostModule,
    GhostNet,
    _make_divisible,
)
from models.network_costs import count_gmacs


@pytest.mark.parametrize(
    ("out_channels", "expected"),
    [
        (320, 3_041_412),
        (640, 3_411_972),
        (960, 3_782_532),
        (1280, 4_153_092),
        (1600, 4_523_652),
    ],
)
def test_parameter_counts_196_classes(out_channels, expected):
    assert count_parameters(GhostNet(num_classes=196, out_channels=out_channels)) == expected


def test_imagenet_parameters_and_macs():
    net = GhostNet(num_classes=1000, out_channels=1280).eval()
    assert count_parameters(net) == 5_183_016
    gmacs = count_gmacs(net, torch.randn(1, 3, 224, 224))
    assert gmacs == pytest.approx(0.141, abs=0.001)


def test_table_has_16_rows_with_paper_kernels():
    assert len(GHOSTNET_CONFIG) == 16
    kernels = [row[0] for row in GHOSTNET_CONFIG]
    assert kernels == [3, 3, 3, 5, 5, 3, 3, 3, 3, 3, 3, 5, 5, 5, 5, 5]
    assert [row[4] for row in GHOSTNET_CONFIG].count(2) == 4
    assert sum(row[3] for row in GHOSTNET_CONFIG) == 7
    bnecks = [m for m in GhostNet().modules() if isinstance(m, GhostBottleneck)]
    assert len(bnecks) == 16


def test_output_shape_and_batch_of_one_in_eval():
    net = GhostNet(num_classes=196, out_channels=320).eval()
    with torch.no_grad():
        assert net(torch.randn(2, 3, 227, 227)).shape == (2, 196)
        assert net(torch.randn(1, 3, 224, 224)).shape == (1, 196)


def test_batch_of_one_in_train_mode_raises():
    net = GhostNet(num_classes=10, out_channels=32).train()
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        net(torch.randn(1, 3, 64, 64))


def test_grayscale_input():
    net = GhostNet(num_classes=196, img_channels=1, out_channels=320)
    assert net.features[0][0].in_channels == 1
    rgb = count_parameters(GhostNet(num_classes=196, out_channels=320))
    assert count_parameters(net) == rgb - 2 * 16 * 3 * 3
    out = net.eval()(torch.randn(2, 1, 227, 227))
    assert out.shape == (2, 196)


def test_head_and_options():
    net = GhostNet(num_classes=196, dropout=0.3, out_channels=320)
    linear1, bn, relu, dropout, linear2 = net.classifier
    assert (linear1.in_features, linear1.out_features, linear1.bias) == (960, 320, None)
    assert isinstance(bn, nn.BatchNorm1d) and isinstance(relu, nn.ReLU)
    assert dropout.p == 0.3
    assert (linear2.in_features, linear2.out_features) == (320, 196)
    assert net.squeeze[0].out_channels == 960


def test_initialization():
    torch.manual_seed(0)
    net = GhostNet(num_classes=196)
    for module in net.modules():
        if isinstance(module, nn.BatchNorm2d):
            assert torch.all(module.weight == 1) and torch.all(module.bias == 0)
    stem = net.features[0][0].weight
    fan_out = stem.shape[0] * stem.shape[2] * stem.shape[3]
    assert stem.std().item() == pytest.approx((2.0 / fan_out) ** 0.5, rel=0.25)


def test_ghost_module_keeps_first_oup_channels():
    module = GhostModule(8, 15)
    assert module(torch.randn(2, 8, 5, 5)).shape == (2, 15, 5, 5)


def test_make_divisible():
    assert _make_divisible(16, 4) == 16
    assert _make_divisible(16 * 0.5, 4) == 8
    assert _make_divisible(72 * 1.3, 4) == 92
    assert _make_divisible(3, 4) == 4


def test_width_mult_changes_size():
    small = GhostNet(num_classes=196, width_mult=0.5)
    assert count_parameters(small) < count_parameters(GhostNet(num_classes=196))
    assert small.eval()(torch.randn(1, 3, 224, 224)).shape == (1, 196)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"num_classes": 0},
        {"img_channels": 0},
        {"out_channels": 0},
        {"dropout": 1.0},
        {"width_mult": 0},
    ],
)
def test_invalid_arguments(kwargs):
    with pytest.raises(ValueError):
        GhostNet(**kwargs)
