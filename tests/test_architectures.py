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
from models.architectures.hardnet import harmonic_links
from utils.errors import UserError

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
# The biggest networks (over 2.5 GMACs at 227x227) are marked slow: `-m "not slow"` skips them.
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
