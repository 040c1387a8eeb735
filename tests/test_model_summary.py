"""model_summary.py: parameters, multiply-adds and latency per architecture."""

from __future__ import annotations

import json

import pytest

import model_summary
from configuration import TEMPLATE_PATH
from models.network_costs import format_table, summarize
from utils.errors import UserError


def test_summarize_ghost_imagenet():
    (row,) = summarize(
        ["ghost"],
        num_classes=1000,
        img_channels=3,
        image_size=(224, 224),
        options={"out_channels": 1280, "dropout": 0.2},
        repeats=1,
    )
    assert row["architecture"] == "ghost"
    assert row["params"] == 5_183_016
    assert row["gmacs"] == pytest.approx(0.141, abs=0.005)
    assert row["latency_ms"] > 0


def test_summarize_ignores_ghost_options_for_other_architectures():
    rows = summarize(["sq_11", "ghost"], 196, 1, [227, 227], {"out_channels": 320}, repeats=0)
    assert [r["architecture"] for r in rows] == ["sq_11", "ghost"]
    assert rows[1]["params"] == 3_041_412 - 2 * 16 * 9
    assert rows[0]["latency_ms"] is None
    assert "SqueezeNet 1.1" in format_table(rows)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"names": ["nope"]},
        {"names": ["ghost"], "image_size": (0, 224)},
        {"names": ["ghost"], "num_classes": 0},
        {"names": ["sq_10"], "image_size": (4, 4)},
    ],
)
def test_summarize_errors(kwargs):
    with pytest.raises(UserError):
        summarize(**{"repeats": 0, **kwargs})


def test_main_template_ghost(capsys):
    code = model_summary.main(
        [
            "-c",
            str(TEMPLATE_PATH),
            "--architecture",
            "ghost",
            "--num-classes",
            "196",
            "--repeats",
            "1",
            "--json",
        ]
    )
    assert code == 0
    rows = json.loads(capsys.readouterr().out)
    assert rows[0]["params"] == 3_041_412
    assert set(rows[0]) == {"architecture", "params", "gmacs", "latency_ms"}


def test_main_imagenet_ghost(capsys):
    model_summary.main(
        [
            "-c",
            str(TEMPLATE_PATH),
            "--architecture",
            "ghost",
            "--num-classes",
            "1000",
            "--set",
            "out_channels=1280",
            "--image-size",
            "224",
            "224",
            "--repeats",
            "1",
            "--json",
        ]
    )
    (row,) = json.loads(capsys.readouterr().out)
    assert row["params"] == 5_183_016
    assert row["gmacs"] == pytest.approx(0.14, abs=0.005)


def test_main_defaults_to_template_and_prints_table(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no config.yml here: falls back to the template
    assert model_summary.main(["--repeats", "1"]) == 0
    out = capsys.readouterr().out
    assert "ghost" in out and "3,041,412" in out and "227x227" in out


def test_main_unknown_architecture_exits_2(run_script):
    argv = ["-c", str(TEMPLATE_PATH), "--architecture", "nope"]
    code, _, err = run_script(model_summary, argv)
    assert code == 2
    assert "unknown architecture 'nope'" in err


@pytest.mark.parametrize("sides", [["0", "224"], ["100000", "100000"]])
def test_main_bad_image_size_exits_2(run_script, sides):
    code, _, err = run_script(model_summary, ["-c", str(TEMPLATE_PATH), "--image-size", *sides])
    assert code == 2
    assert "--image-size must be two whole numbers from 1 to 4096" in err


@pytest.mark.parametrize("setting", ["width_mult=100", "out_channels=1000000000"])
def test_a_network_too_wide_to_build_is_refused_before_it_is_built(run_script, setting):
    code, _, err = run_script(model_summary, ["--repeats", "0", "--set", setting])
    assert code == 2 and "less than or equal to" in err, err


def test_main_argparse_error_exits_2():
    with pytest.raises(SystemExit) as info:
        model_summary.main(["--image-size", "224"])
    assert info.value.code == 2


def test_cli_rejects_a_ghost_option_for_another_architecture(run_script):
    argv = ["--architecture", "mob_v2", "--set", "dropout=0.5", "--repeats", "0"]
    code, _, err = run_script(model_summary, argv)
    assert code == 2
    assert "dropout" in err
