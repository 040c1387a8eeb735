"""Every key of the architecture dictionary trains from scratch at 227x227."""

from __future__ import annotations

import pytest
import torch

from models.arch_dict import (
    ARCH_OPTIONS,
    ARCHITECTURES,
    Architecture,
    architecture_options,
    build_network,
    count_parameters,
)
from models.architectures.efficientnet import MBConvBlock, drop_connect
from models.architectures.hardnet import harmonic_links
from models.architectures.squeezenext import SqueezeNextBlock
from utils.errors import UserError
from workflows.training.run import run_training

EXPECTED_KEYS = [
    "sq_10",
    "sq_11",
    "sqnxt_1",
    "sqnxt_1v5",
    "sqnxt_2",
    "sqnxt_2v5",
    "mob_v2",
    *[f"eff_b{i}" for i in range(8)],
    "ghost",
    "hard_39",
    "hard_39dw",
    "hard_68",
    "hard_68dw",
    "hard_85",
    "hard_85dw",
    "shuff_v2_x05",
    "shuff_v2_x10",
    "shuff_v2_x15",
    "shuff_v2_x20",
]
# The networks slowest to build and run on a CPU are marked slow: `-m "not slow"` skips them.
SLOW_KEYS = {"eff_b5", "eff_b6", "eff_b7", "hard_85"}
NUM_CLASSES = 7


def _keys():
    return [
        pytest.param(key, marks=pytest.mark.slow) if key in SLOW_KEYS else key
        for key in EXPECTED_KEYS
    ]


def test_keys_and_descriptions():
    assert list(ARCHITECTURES) == EXPECTED_KEYS
    assert all(isinstance(arch, Architecture) for arch in ARCHITECTURES.values())
    assert all(arch.description for arch in ARCHITECTURES.values())
    assert ARCHITECTURES["sq_11"].description == "SqueezeNet 1.1"


@pytest.mark.parametrize("img_channels", [3, 1])
@pytest.mark.parametrize("name", _keys())
def test_forward_backward_227(name, img_channels):
    torch.manual_seed(0)
    net = build_network(name, NUM_CLASSES, img_channels)
    net.train()
    out = net(torch.randn(2, img_channels, 227, 227))
    assert out.shape == (2, NUM_CLASSES)
    assert torch.isfinite(out).all()
    out.logsumexp(dim=1).mean().backward()
    grads = [p.grad for p in net.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)


# Parameter counts at 1000 classes (224x224 does not matter for parameters) next to what the
# papers report (see the README, "Architectures").
PAPER_PARAMS_M = {
    "sq_10": 1.25,
    "sqnxt_1": 0.72,
    "mob_v2": 3.5,
    "eff_b0": 5.3,
    "eff_b1": 7.8,
    "eff_b2": 9.2,
    "eff_b3": 12,
    "eff_b4": 19,
    "eff_b5": 30,
    "eff_b6": 43,
    "eff_b7": 66,
    "ghost": 5.2,
    "hard_39dw": 3.5,
    "hard_68": 17.6,
    "hard_68dw": 4.2,
    "hard_85": 36.7,
    "shuff_v2_x05": 1.4,
    "shuff_v2_x10": 2.3,
    "shuff_v2_x15": 3.5,
    "shuff_v2_x20": 7.4,
}


@pytest.mark.parametrize(
    "name",
    [pytest.param(n, marks=pytest.mark.slow) if n in SLOW_KEYS else n for n in PAPER_PARAMS_M],
)
def test_parameters_close_to_papers(name):
    params = count_parameters(build_network(name, 1000))
    assert params / 1e6 == pytest.approx(PAPER_PARAMS_M[name], rel=0.05)


def test_squeezenext_and_hardnet_exact_counts():
    expected = {
        "sqnxt_1": 724_056,
        "sqnxt_1v5": 921_816,
        "sqnxt_2": 2_583_752,
        "sqnxt_2v5": 3_366_344,
        "hard_39dw": 3_488_228,
        "hard_68dw": 4_180_602,
    }
    for name, count in expected.items():
        assert count_parameters(build_network(name, 1000)) == count, name


def test_hardnet_harmonic_links():
    assert harmonic_links(1) == [0]
    assert harmonic_links(2) == [1, 0]
    assert harmonic_links(6) == [5, 4]
    assert harmonic_links(8) == [7, 6, 4, 0]


def test_unknown_name_lists_valid_names():
    with pytest.raises(UserError) as info:
        build_network("ghots", 196)
    message = str(info.value)
    assert "'ghots'" in message and "Did you mean 'ghost'" in message
    for key in EXPECTED_KEYS:
        assert key in message


def test_option_for_non_ghost_rejected():
    with pytest.raises(UserError, match=r"'sq_10' does not take the option\(s\) dropout"):
        build_network("sq_10", 196, dropout=0.2)
    with pytest.raises(UserError, match="out_channels"):
        build_network("mob_v2", 196, out_channels=320)


def test_unset_options_are_ignored():
    net = build_network("sq_11", 196, 3, dropout=None, out_channels=None, width_mult=None)
    assert net(torch.randn(1, 3, 227, 227)).shape == (1, 196)


def test_unknown_option_rejected():
    with pytest.raises(UserError, match="unknown architecture option"):
        build_network("ghost", 196, depth=3)


def test_ghost_options_pass_through():
    net = build_network("ghost", 196, 1, dropout=0.4, out_channels=320, width_mult=1.0)
    assert count_parameters(net) == 3_041_412 - 2 * 16 * 9
    assert net.classifier[3].p == 0.4


def test_architecture_options():
    assert architecture_options("ghost") == ("dropout", "out_channels", "width_mult")
    assert all(architecture_options(n) == () for n in EXPECTED_KEYS if n != "ghost")
    with pytest.raises(UserError):
        architecture_options("nope")


def test_grayscale_stem_has_one_input_channel():
    for name in ("sq_10", "mob_v2", "eff_b0", "shuff_v2_x10", "sqnxt_1", "hard_68dw"):
        net = build_network(name, 196, 1)
        first = next(m for m in net.modules() if isinstance(m, torch.nn.Conv2d))
        assert first.in_channels == 1, name


def test_declared_options_are_the_builder_signature():
    for name, arch in ARCHITECTURES.items():
        assert arch.options == arch.signature_options(), name
    assert ARCHITECTURES["ghost"].options == ("dropout", "out_channels", "width_mult")
    assert ARCHITECTURES["sq_10"].options == ()
    assert all(ARCHITECTURES[n].options == () for n in EXPECTED_KEYS if n != "ghost")
    assert ARCH_OPTIONS == ("dropout", "out_channels", "width_mult")


def test_architecture_is_callable():
    net = ARCHITECTURES["ghost"](num_classes=10, img_channels=1, out_channels=32)
    assert net.classifier[-1].out_features == 10
    assert net.features[0][0].in_channels == 1


def test_unknown_name_without_close_match_lists_every_name():
    with pytest.raises(UserError) as info:
        build_network("resnet50", 196)
    message = str(info.value)
    assert "did you mean" not in message.lower()
    assert message.endswith("Set 'architecture' to one of: " + ", ".join(EXPECTED_KEYS) + ".")


@pytest.mark.parametrize(
    ("typo", "suggestion"), [("mobv2", "mob_v2"), ("SQ_11", "sq_11"), ("hard_68ds", "hard_68dw")]
)
def test_unknown_name_suggests_the_closest(typo, suggestion):
    with pytest.raises(UserError, match=f"Did you mean '{suggestion}'\\?"):
        architecture_options(typo)


def test_count_parameters():
    assert count_parameters(build_network("sq_10", 196)) == 835_972
    assert count_parameters(build_network("ghost", 196, 1)) == 4_152_804
    assert count_parameters(build_network("mob_v2", 196)) == 2_474_948
    frozen = build_network("sq_11", 196)
    for parameter in frozen.features.parameters():
        parameter.requires_grad_(False)
    assert count_parameters(frozen) == count_parameters(frozen.classifier) == 100_548


# ---- SqueezeNext and EfficientNet as the thesis's code built them (its
# models/architectures/squeezenext.py and efficientnet.py)


def _conv_layers(module: torch.nn.Module) -> list[torch.nn.Conv2d]:
    return [m for m in module.modules() if isinstance(m, torch.nn.Conv2d)]


def _output_sizes(net: torch.nn.Module, layers, size: int = 227) -> list[int]:
    """The output height of each of ``layers`` for one ``size`` x ``size`` image."""
    sizes = []
    hooks = [
        layer.register_forward_hook(lambda m, i, o: sizes.append(o.shape[-1])) for layer in layers
    ]
    net.eval()
    with torch.no_grad():
        net(torch.randn(1, 3, size, size))
    for hook in hooks:
        hook.remove()
    return sizes


def test_squeezenext_block_convolves_1x3_before_3x1():
    block = SqueezeNextBlock(64, 32, 1)
    convs = _conv_layers(block.body)
    assert [c.kernel_size for c in convs] == [(1, 1), (1, 1), (1, 3), (3, 1), (1, 1)]
    assert [c.padding for c in convs] == [(0, 0), (0, 0), (0, 1), (1, 0), (0, 0)]
    assert [c.out_channels for c in convs] == [16, 8, 16, 16, 32]  # in > out: a quarter
    assert all(c.bias is not None for c in _conv_layers(block))


def test_squeezenext_shortcut_goes_through_a_relu_before_the_sum():
    block = SqueezeNextBlock(8, 16, 1).eval()  # a projection shortcut: 8 -> 16 channels
    last_bn, shortcut_bn = block.body[-1][1], block.shortcut[1]
    with torch.no_grad():
        last_bn.weight.zero_()
        last_bn.bias.fill_(1.0)  # the body outputs ReLU(1) = 1 everywhere
        shortcut_bn.weight.zero_()
        shortcut_bn.bias.fill_(-1.0)  # the shortcut outputs -1 everywhere
        out = block(torch.randn(2, 8, 5, 5))
    # ReLU(1 + ReLU(-1)) = 1; without the shortcut's ReLU it would be ReLU(1 - 1) = 0.
    assert torch.equal(out, torch.ones_like(out))


def test_squeezenext_stem_pool_and_feature_map_sizes_at_227():
    net = build_network("sqnxt_1", NUM_CLASSES)
    stem_conv, _, _ = net.stem[0]
    assert (stem_conv.kernel_size, stem_conv.stride, stem_conv.padding) == ((7, 7), (2, 2), (0, 0))
    pool = net.stem[1]
    assert isinstance(pool, torch.nn.MaxPool2d)
    assert (pool.kernel_size, pool.stride, pool.ceil_mode) == (2, 2, False)
    assert isinstance(net.pool, torch.nn.AvgPool2d) and net.pool.kernel_size == 4
    layers = [stem_conv, pool, *net.stages, net.final_conv, net.pool]
    assert _output_sizes(net, layers) == [111, 55, 55, 28, 14, 7, 7, 1]


def test_squeezenext_keeps_pytorchs_default_initialization():
    net = build_network("sqnxt_2v5", NUM_CLASSES)
    convs = _conv_layers(net)
    # Kaiming (fan-out) init would zero every bias; PyTorch's default draws them.
    assert all(c.bias.abs().sum() > 0 for c in convs)
    stem = convs[0]
    fan_in = stem.in_channels * 7 * 7
    assert stem.weight.abs().max() <= 1 / fan_in**0.5  # kaiming_uniform_(a=sqrt(5)) bound


@pytest.mark.parametrize(("size", "works"), [(104, False), (105, True), (232, True), (233, False)])
def test_squeezenext_takes_the_sizes_its_4x4_pool_allows(size, works):
    net = build_network("sqnxt_1", NUM_CLASSES).eval()
    image = torch.randn(1, 3, size, size)
    if works:
        assert net(image).shape == (1, NUM_CLASSES)
    else:
        with pytest.raises(ValueError, match=f"105x105 to 232x232 pixels.*got {size}x{size}"):
            net(image)


def test_efficientnet_pads_like_tensorflow_and_ends_7x7_at_227():
    net = build_network("eff_b0", NUM_CLASSES)
    pads = {}
    for seq in net.modules():
        if isinstance(seq, torch.nn.Sequential) and isinstance(seq[0], torch.nn.ZeroPad2d):
            conv = seq[1]
            assert conv.padding == (0, 0)
            pads[(conv.kernel_size[0], conv.stride[0])] = seq[0].padding
    assert pads == {
        (3, 2): (0, 1, 0, 1),
        (3, 1): (1, 1, 1, 1),
        (5, 2): (1, 2, 1, 2),
        (5, 1): (2, 2, 2, 2),
        (1, 1): (0, 0, 0, 0),
    }
    blocks = list(net.features)
    assert len(blocks) == 1 + 16 + 1
    sizes = _output_sizes(net, blocks)
    assert sizes[0] == 113 and sizes[-1] == 7  # torchvision's EfficientNet: 114 and 8
    stage_ends = [1, 3, 5, 8, 11, 15, 16]  # the last block of each stage
    assert [sizes[i] for i in stage_ends] == [113, 56, 28, 14, 14, 7, 7]


def test_efficientnet_block_layers_and_constant_drop_connect():
    net = build_network("eff_b0", NUM_CLASSES)
    blocks = [m for m in net.modules() if isinstance(m, MBConvBlock)]
    first, second = blocks[0].conv, blocks[1].conv  # expansion 1 (no 1x1 expand), then 6
    assert [type(m).__name__ for m in first] == [
        "Sequential", "SqueezeExcitation", "Conv2d", "BatchNorm2d"
    ]  # fmt: skip
    assert [type(m).__name__ for m in second] == [
        "Sequential", "Sequential", "SqueezeExcitation", "Conv2d", "BatchNorm2d"
    ]  # fmt: skip
    assert [type(m).__name__ for m in second[0]] == ["ZeroPad2d", "Conv2d", "BatchNorm2d", "SiLU"]
    assert second[1][1].groups == 96 and second[2].se[1].out_channels == 16 // 4
    residual = [b for b in blocks if b.use_residual]
    assert len(residual) == 9 and {b.drop_connect_rate for b in residual} == {0.2}
    bns = [m for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert {(bn.eps, bn.momentum) for bn in bns} == {(1e-5, 0.1)}
    assert net.classifier[0].p == 0.2 and build_network("eff_b7", 3).classifier[0].p == 0.5
    linear = net.classifier[1]
    assert linear.weight.abs().max() <= 1 / NUM_CLASSES**0.5 and not linear.bias.any()


def test_drop_connect_drops_whole_images_while_training():
    torch.manual_seed(0)
    x = torch.ones(4000, 2, 3, 3)
    out = drop_connect(x, 0.2, training=True)
    per_image = out.flatten(1)
    assert set(per_image.unique().tolist()) == {0.0, 1.25}
    assert (per_image.min(1).values == per_image.max(1).values).all()  # a whole image or none
    assert (per_image[:, 0] == 0).float().mean().item() == pytest.approx(0.2, abs=0.03)
    assert drop_connect(x, 0.2, training=False) is x


def test_a_size_squeezenext_cannot_take_stops_the_run_naming_its_range(fast_config, tmp_path):
    config = fast_config("architecture=sqnxt_1", "image_size=[64,64]")
    with pytest.raises(UserError, match=r"'sqnxt_1'.*105x105 to 232x232 pixels.*got 64x64"):
        run_training(config, progress_bar=False)
    assert not any((tmp_path / "output").glob("sqnxt_1_*"))  # no run folder left behind
