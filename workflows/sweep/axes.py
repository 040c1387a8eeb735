"""The swept keys of ``--sweep KEY=V1,V2,...`` / ``KEY=LOW..HIGH[:log]``, parsed into axes, and
the sweep's stable name."""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from typing import Any

import yaml

from configuration import Config
from configuration.loading import ConfigLoader, read_yaml
from utils.errors import UserError
from workflows.runs.comparison import NOT_SETTINGS

_RANGE = re.compile(
    r"^\s*([-+]?[\d.]+(?:[eE][-+]?\d+)?)\s*\.\.\s*([-+]?[\d.]+(?:[eE][-+]?\d+)?)\s*(:log)?\s*$"
)


@dataclass(frozen=True)
class Axis:
    """One swept key: a list of values, or a numeric range (``--trials`` only)."""

    key: str
    values: tuple[Any, ...] = ()
    low: float | None = None
    high: float | None = None
    log: bool = False

    @property
    def is_range(self) -> bool:
        return self.low is not None

    @property
    def choices(self) -> list[str]:
        """The values as JSON text: Optuna's categorical choices take only plain scalars."""
        return [json.dumps(v) for v in self.values]


def parse_axes(specs: list[str]) -> list[Axis]:
    """``KEY=V1,V2,...`` or ``KEY=LOW..HIGH[:log]`` for each ``--sweep``."""
    axes: list[Axis] = []
    for spec in specs:
        key, sep, text = spec.partition("=")
        key = key.strip()
        if not sep or not key or not text.strip():
            raise UserError(
                f"--sweep '{spec}': expected KEY=V1,V2,... or KEY=LOW..HIGH[:log], e.g. "
                "--sweep optimizer_params.weight_decay=0.3,0.4,0.5"
            )
        if any(a.key == key for a in axes):
            raise UserError(f"--sweep names '{key}' twice; give all its values in one --sweep.")
        match = _RANGE.match(text)
        if match:
            low, high = (_number(match.group(i)) for i in (1, 2))
            if not low < high or (match.group(3) and low <= 0):
                raise UserError(
                    f"--sweep '{spec}': a range needs LOW < HIGH (and LOW > 0 with :log)."
                )
            axes.append(Axis(key, low=low, high=high, log=bool(match.group(3))))
            continue
        values = []
        for item in _split_top_level(text):
            values.append(read_yaml(item, f"--sweep '{spec}': '{item}'"))  # aliases bounded
        if len({json.dumps(v, sort_keys=True) for v in values}) != len(values):
            raise UserError(f"--sweep '{spec}' lists a value twice; list each value once.")
        axes.append(Axis(key, values=tuple(values)))
    return axes


def sweep_name(axes: list[Axis], search: bool, base: Config | None = None, data: str = "") -> str:
    """Readable and stable: the swept keys and a hash of the specification, of the base
    config's training settings (not its paths) and of ``data`` (what identifies the data), so
    the same command finds its study again and a changed setting or other data starts a new
    one."""
    settings = {}
    if base is not None:
        settings = {
            k: v for k, v in base.to_public_dict().items() if not k.startswith(NOT_SETTINGS)
        }
    spec = json.dumps(
        [[a.key, list(a.values), a.low, a.high, a.log] for a in axes] + [search, settings, data],
        sort_keys=True,
        default=str,
    )
    keys = "+".join(a.key.rsplit(".", 1)[-1] for a in axes)
    return f"{keys}-{hashlib.sha1(spec.encode()).hexdigest()[:8]}"


def _split_top_level(text: str) -> list[str]:
    """Split on commas outside brackets and quotes: ``[64,64],[128,128]`` is two values."""
    items, depth, quote, current = [], 0, "", ""
    for char in text:
        if quote:
            quote = "" if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char in "[{":
            depth += 1
        elif char in "]}":
            depth -= 1
        elif char == "," and depth == 0:
            items.append(current.strip())
            current = ""
            continue
        current += char
    items.append(current.strip())
    return [i for i in items if i]


def _number(text: str) -> float | int:
    value = yaml.load(text, Loader=ConfigLoader)
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise UserError(f"'{text}' is not a number.")
    return value
