"""Property-based tests: whatever the input, the config loader, the ``--set`` parser, the
``lr_lambda`` parser and the labels CSV reader either accept it or end in our ``UserError`` (or
the parser's own error), never in another exception. ``CARS_FUZZ_EXAMPLES`` raises the number
of examples (e.g. 2000 for a long session); the default keeps each test to a few seconds."""

from __future__ import annotations

import contextlib
import csv
import math
import os
import tempfile
from pathlib import Path

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from configuration import Config, load_config
from configuration.loading import apply_overrides, validate_config
from datasets.labels import LABEL_COLUMNS, read_annotations
from utils.errors import UserError
from utils.lr_lambda import LambdaSyntaxError, parse_lr_lambda

FUZZ = settings(
    max_examples=int(os.environ.get("CARS_FUZZ_EXAMPLES", "30")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
    derandomize=os.environ.get("CARS_FUZZ_EXAMPLES") is None,  # the same examples in CI
)

SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=20)
)
VALUES = st.recursive(
    SCALARS,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=10,
)
KEYS = st.sampled_from(sorted(Config.model_fields))


def _load_text(text: str) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "config.yml"
        path.write_text(text, encoding="utf-8")
        with contextlib.suppress(UserError):
            load_config(path)


@FUZZ
@given(values=st.dictionaries(KEYS, VALUES, min_size=1, max_size=4))
def test_any_values_under_real_keys_load_or_are_a_user_error(values):
    try:
        validate_config(values, source="fuzz")
    except UserError as err:
        assert len(str(err)) < 5000  # values are shortened, never printed whole


@FUZZ
@given(text=st.text(max_size=200))
def test_any_config_text_loads_or_is_a_user_error(text):
    _load_text(text)


@FUZZ
@given(values=st.dictionaries(KEYS, VALUES, min_size=1, max_size=3))
def test_any_yaml_document_of_real_keys_loads_or_is_a_user_error(values):
    _load_text(yaml.safe_dump(values, allow_unicode=True))


OVERRIDE_KEYS = st.one_of(
    KEYS,
    st.builds(lambda a, b: f"{a}.{b}", KEYS, st.text(max_size=6)),
    st.text(max_size=12),
)


@FUZZ
@given(
    items=st.lists(
        st.one_of(
            st.builds(lambda k, v: f"{k}={v}", OVERRIDE_KEYS, st.text(max_size=30)),
            st.text(max_size=30),
        ),
        max_size=4,
    )
)
def test_any_set_overrides_apply_or_are_a_user_error(items):
    try:
        raw = apply_overrides({"batch_size": 4, "optimizer_params": {"lr": 0.1}}, items)
    except UserError:
        return
    with contextlib.suppress(UserError):
        validate_config(raw, source="--set")


ATOMS = st.sampled_from(
    ["epoch", "e", "0.955", "2", "1e308", "9", "pi", "x", "__import__('os')", "epoch.real", "()"]
)
OPERATORS = st.sampled_from(["+", "-", "*", "/", "//", "%", "**", ",", " if ", " and "])
FUNCTIONS = st.sampled_from(["pow", "exp", "log", "sqrt", "min", "floor", "abs", "eval", "open"])


@st.composite
def expressions(draw, depth=0):
    if depth > 3 or draw(st.booleans()):
        return draw(ATOMS)
    kind = draw(st.integers(0, 2))
    if kind == 0:
        return f"({draw(expressions(depth + 1))}{draw(OPERATORS)}{draw(expressions(depth + 1))})"
    if kind == 1:
        return f"{draw(FUNCTIONS)}({draw(expressions(depth + 1))})"
    return f"-{draw(expressions(depth + 1))}"


@FUZZ
@given(
    source=st.one_of(st.text(max_size=60), st.builds(lambda b: f"lambda epoch: {b}", expressions()))
)
def test_any_lr_lambda_parses_into_finite_factors_or_is_rejected(source):
    try:
        factor = parse_lr_lambda(source)
    except LambdaSyntaxError:
        return
    for epoch in range(4):
        try:
            value = factor(epoch)
        except LambdaSyntaxError:
            continue
        assert isinstance(value, float) and math.isfinite(value) and value >= 0


CELLS = st.one_of(
    st.text(max_size=12),
    st.integers(-5, 10**13).map(str),
    st.floats(allow_nan=True).map(str),
    st.just(""),
)


@FUZZ
@given(
    header=st.one_of(st.just(list(LABEL_COLUMNS)), st.lists(st.text(max_size=8), max_size=7)),
    rows=st.lists(st.lists(CELLS, max_size=8), max_size=5),
    raw_tail=st.text(max_size=40),
)
def test_any_labels_csv_reads_or_is_a_user_error(header, rows, raw_tail):
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "train_labels.csv"
        with path.open("w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(header)
            writer.writerows(rows)
            handle.write(raw_tail)
        try:
            annotations = read_annotations(folder, "train")
        except UserError:
            return
        assert all(ann.label >= 0 for ann in annotations.values())
