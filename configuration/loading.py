"""Reading a config: the YAML file, ``--set KEY=VALUE`` overrides, and validation into a
``Config``, with every problem turned into one ``UserError`` naming the key, what was expected,
what was given and, for names, the closest valid one."""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from configuration.schema import REDACTED, SECRET_KEYS, Config
from utils.errors import UserError
from utils.names import NameError_, closest

PROJECT_ROOT = Path(__file__).resolve().parent.parent
TEMPLATE_PATH = PROJECT_ROOT / "config_template.yml"
DEFAULT_CONFIG = "config.yml"
_SPELLINGS = {"out_channels": "output_channels", "output_channels": "out_channels"}


class ConfigLoader(yaml.SafeLoader):
    """YAML's safe loader, but ``1e-3`` is a float (YAML 1.1 wants ``1.0e-3`` and would read it
    as a string, so ``lr: 1e-3`` would fail with a puzzling message)."""


ConfigLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(
        r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
        |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
        |\.[0-9_]+(?:[eE][-+]?[0-9]+)?
        |[-+]?\.(?:inf|Inf|INF)
        |\.(?:nan|NaN|NAN))$""",
        re.X,
    ),
    list("-+0123456789."),
)


def load_config(
    path: str | Path | None = DEFAULT_CONFIG,
    overrides: list[str] | tuple[str, ...] = (),
    data_path: str | None = None,
) -> Config:
    """Read, override and validate a config file; every problem is a ``UserError``."""
    path = Path(path if path is not None else DEFAULT_CONFIG)
    if not path.is_file():
        if path.name == DEFAULT_CONFIG and not path.exists():
            raise UserError(
                f"config file '{path}' not found. Copy the template and fill in the paths: "
                f"'cp config_template.yml {DEFAULT_CONFIG}' (Windows: 'copy config_template.yml "
                f"{DEFAULT_CONFIG}'), or pass another file with -c PATH."
            )
        raise UserError(
            f"config file '{path}' not found (or not a file). Pass an existing YAML file with -c PATH."
        )
    try:
        raw = yaml.load(path.read_text(encoding="utf-8"), Loader=ConfigLoader)
    except yaml.YAMLError as err:
        raise UserError(
            f"config file '{path}' is not valid YAML: {err}. Fix the syntax at the place shown."
        ) from None
    except (OSError, UnicodeDecodeError) as err:
        raise UserError(
            f"config file '{path}' could not be read ({err}). Check the file and its permissions."
        ) from None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise UserError(
            f"config file '{path}' must be a mapping of keys to values (like config_template.yml), "
            f"got a {type(raw).__name__}. Start again from config_template.yml."
        )
    raw = apply_overrides(raw, overrides)
    if data_path is not None:
        raw["stanford_data_path"] = str(data_path)
    return validate_config(raw, source=str(path))


def apply_overrides(raw: dict, overrides) -> dict:
    """Apply ``KEY=VALUE`` strings (value parsed as YAML, dotted keys reach into mappings)."""
    raw = copy.deepcopy(raw)
    for item in overrides or ():
        key, sep, text = str(item).partition("=")
        key = key.strip()
        if not sep or not key:
            raise UserError(
                f"--set '{item}' is not KEY=VALUE. Write it like --set batch_size=32 or "
                "--set optimizer_params.weight_decay=0.3."
            )
        try:
            value = yaml.load(text, Loader=ConfigLoader) if text.strip() else None
        except yaml.YAMLError as err:
            raise UserError(
                f"--set '{item}': the value is not valid YAML ({err}). Quote it or fix it."
            ) from None
        if key in _SPELLINGS:  # an override replaces the setting under either spelling
            raw.pop(_SPELLINGS[key], None)
        target = raw
        parts = key.split(".")
        for part in parts[:-1]:
            if not isinstance(target.get(part), dict):
                target[part] = {}
            target = target[part]
        target[parts[-1]] = value
    return raw


def validate_config(raw: dict, source: str = "config") -> Config:
    """Validate a raw mapping into a ``Config``, translating errors into one ``UserError``."""
    try:
        return Config.model_validate(raw)
    except ValidationError as err:
        raise UserError(_format_errors(err, source)) from None
    except NameError_ as err:  # pragma: no cover - validators wrap these
        raise UserError(f"{source}: {err}") from None


def _format_errors(err: ValidationError, source: str) -> str:
    problems = []
    valid_keys = set(Config.model_fields) | {"output_channels"}
    for item in err.errors():
        loc = ".".join(str(p) for p in item["loc"])
        given = item.get("input")
        message = item["msg"].removeprefix("Value error, ")
        if item["type"] == "extra_forbidden":
            top = str(item["loc"][0]) if item["loc"] else loc
            if top in Config.model_fields:
                problems.append(f"key '{loc}' is not a setting of '{top}'")
            else:
                problems.append(f"unknown key '{loc}'; {closest(top, valid_keys)}")
        elif not loc:
            problems.append(message)
        else:
            shown = REDACTED if loc in SECRET_KEYS else _short(given)
            problems.append(f"key '{loc}': {message} (given: {shown})")
    return (
        f"{source} has {len(problems)} problem(s): " + "; ".join(problems) + ". "
        "Fix the value(s) in the config file (see config_template.yml for valid examples) "
        "or with --set KEY=VALUE."
    )


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."
