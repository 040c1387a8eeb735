"""Reading a config: the YAML file, ``--set KEY=VALUE`` overrides, and validation into a
``Config``, with every problem turned into one ``UserError`` naming the key, what was expected,
what was given and, for names, the closest valid one."""

from __future__ import annotations

import copy
import logging
import re
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from configuration.checks import ConfigProblems
from configuration.schema import REDACTED, SECRET_KEYS, Config
from models.arch_dict import takers
from utils.errors import UserError
from utils.names import NameError_, closest
from utils.text import clip, mask, secret_values, short

log = logging.getLogger(__name__)

PROJECT_ROOT = Path(__file__).resolve().parent.parent
TEMPLATE_PATH = PROJECT_ROOT / "config_template.yml"
DEFAULT_CONFIG = "config.yml"
_SPELLINGS = {"out_channels": "output_channels", "output_channels": "out_channels"}


class ConfigLoader(yaml.SafeLoader):
    """YAML's safe loader, but ``1e-3`` is a float (YAML 1.1 wants ``1.0e-3`` and would read it
    as a string, so ``lr: 1e-3`` would fail with a puzzling message), and a key given twice in
    one mapping is an error (YAML would silently keep the last)."""

    def construct_mapping(self, node, deep=False):
        first_line: dict[Any, int] = {}
        for key_node, _ in node.value:
            if (
                not isinstance(key_node, yaml.ScalarNode)
                or key_node.tag == "tag:yaml.org,2002:merge"
            ):
                continue
            key = key_node.value
            if key in first_line:
                raise yaml.constructor.ConstructorError(
                    problem=f"key '{key}' is given twice (first on line {first_line[key]}); "
                    "remove one of them",
                    problem_mark=key_node.start_mark,
                )
            first_line[key] = key_node.start_mark.line + 1
        return super().construct_mapping(node, deep=deep)


def yaml_problem(err: yaml.YAMLError) -> str:
    """What is wrong and where (line and column), on one line."""
    mark, problem = getattr(err, "problem_mark", None), getattr(err, "problem", None)
    if mark is None or problem is None:
        return clip(err, 2000)
    context = getattr(err, "context", None)
    text = f"{problem} ({context})" if context else problem
    if "'\\t'" in problem:
        text += "; indent with spaces, not tabs"
    return f"{clip(text, 1000)} at line {mark.line + 1}, column {mark.column + 1}"


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
    text = read_config_text(path)
    # ---- secrets and sizes: no message shows a secret, no value is unbounded ----
    secrets = secret_values("\n".join([text, *map(str, overrides or ())]), SECRET_KEYS)
    try:
        return _load_text(text, path, overrides, data_path)
    except UserError as err:
        raise UserError(mask(str(err), secrets)) from None


def read_config_text(path: Path) -> str:
    """The text of a config file, refused (a UserError) when it is too large or unreadable."""
    check_size(path)
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise UserError(
            f"config file '{path}' could not be read ({err}). Check the file and its permissions."
        ) from None


def read_yaml(text: str, source: str) -> Any:
    """YAML ``text`` as the project reads every YAML (a config file, a run's ``config.yml``, a
    ``--set`` or ``--sweep`` value): ``ConfigLoader``, and a UserError naming ``source`` when
    it does not parse, nests too deep, or its aliases expand past ``MAX_VALUES`` values."""
    try:
        value = yaml.load(text, Loader=ConfigLoader)
    except yaml.YAMLError as err:
        raise UserError(f"{source} is not valid YAML: {yaml_problem(err)}. Fix it there.") from None
    except RecursionError:
        raise UserError(
            f"{source}: the YAML nests too deep to read. A config nests a few levels; fix it there."
        ) from None
    check_expansion(value, source)
    return value


def read_yaml_file(path: Path, source: str) -> Any:
    """``read_yaml`` of a file, refused unread when larger than ``MAX_CONFIG_BYTES``."""
    return read_yaml(read_config_text(path), source)


def _load_text(text: str, path: Path, overrides, data_path: str | None) -> Config:
    raw = read_yaml(text, f"config file '{path}'")
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
    set_keys = {str(item).partition("=")[0].strip().split(".")[0] for item in overrides or ()}
    return validate_config(raw, source=str(path), set_keys=set_keys)


def configured_output_path(path: str | Path | None = None) -> str | None:
    """Where runs go for a command that needs only that: ``output_path`` of ``path`` when
    given (its problems are a ``UserError``), else of ./config.yml when that loads (a broken
    one is no reason to refuse such a command), else None (the caller's default)."""
    if path is not None:
        return load_config(path).output_path
    if Path(DEFAULT_CONFIG).is_file():
        try:
            return load_config(DEFAULT_CONFIG).output_path
        except UserError:
            pass
    return None


def apply_overrides(raw: dict, overrides) -> dict:
    """Apply ``KEY=VALUE`` strings (value parsed as YAML, dotted keys reach into mappings)."""
    raw = copy.deepcopy(raw)
    for item in overrides or ():
        key, sep, text = str(item).partition("=")
        key = key.strip()
        secrets = secret_values(str(item), SECRET_KEYS)
        shown = mask(clip(item), secrets)
        if not sep or not key:
            raise UserError(
                f"--set '{shown}' is not KEY=VALUE. Write it like --set batch_size=32 or "
                "--set optimizer_params.weight_decay=0.3."
            )
        if key in SECRET_KEYS:
            secrets = [*secrets, text.strip(), text.strip().strip("'\"")]
            shown = f"{key}={REDACTED}"
        try:
            value = yaml.load(text, Loader=ConfigLoader) if text.strip() else None
        except yaml.YAMLError as err:
            raise UserError(
                f"--set '{shown}': the value is not valid YAML ({mask(yaml_problem(err), secrets)})."
                " Quote it or fix it."
            ) from None
        except RecursionError:
            raise UserError(f"--set '{shown}': the value nests too deep to read.") from None
        check_expansion(value, f"--set '{shown}'")
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


def validate_config(
    raw: dict, source: str = "config", set_keys: set[str] | frozenset[str] = frozenset()
) -> Config:
    """Validate a raw mapping into a ``Config``, translating errors into one ``UserError``.

    Architecture options the chosen architecture does not take (GhostNet's ``dropout``,
    ``output_channels``, ``width_mult`` for another network) are ignored with one warning, as
    the original did, so that switching ``architecture`` in the template just works."""
    try:
        config = Config.model_validate(raw)
    except ValidationError as err:
        raise UserError(_format_errors(err, source, set_keys)) from None
    except NameError_ as err:  # pragma: no cover - validators wrap these
        raise UserError(f"{source}: {err}") from None
    ignored = config.ignored_arch_options()
    if ignored:
        written = [
            "output_channels" if key == "out_channels" and "output_channels" in raw else key
            for key in ignored
        ]
        names = ", ".join(written)
        log.warning(
            "%s: %s ignored: '%s' does not take %s (they apply to %s).",
            source,
            names,
            config.architecture,
            "it" if len(ignored) == 1 else "them",
            ", ".join(takers(ignored)),
        )
    return config


def _format_errors(
    err: ValidationError, source: str, set_keys: set[str] | frozenset[str] = frozenset()
) -> str:
    problems = []
    from_set = []
    valid_keys = set(Config.model_fields) | {"output_channels"}
    for item in err.errors(include_input=True, include_url=False):
        loc = ".".join(str(p) for p in item["loc"])
        given = item.get("input")
        message = item["msg"].removeprefix("Value error, ")
        across = item.get("ctx", {}).get("error")
        if isinstance(across, ConfigProblems):  # the checks across keys, each naming its keys
            for problem in across.problems:
                problems.append(str(problem))
                from_set.append(problem.keys[0].split(".")[0] in set_keys)
            continue
        if not loc:  # the spellings check, which names its keys itself
            problems.append(message)
            from_set.append(False)
            continue
        from_set.append(str(item["loc"][0]) in set_keys)
        if item["type"] == "extra_forbidden":
            top = str(item["loc"][0]) if item["loc"] else loc
            if top in Config.model_fields:
                problems.append(f"key '{loc}' is not a setting of '{top}'")
            else:
                problems.append(f"unknown key '{loc}'; {closest(top, valid_keys)}")
        else:
            shown = REDACTED if loc in SECRET_KEYS else short(given)
            problems.append(f"key '{loc}': {clip(message, 1000)} (given: {shown})")
    if from_set and all(from_set):
        header, fix = "--set", "Fix the value(s) given with --set KEY=VALUE"
    else:
        problems = [
            f"{text} (from --set)" if came_from_set else text
            for text, came_from_set in zip(problems, from_set)
        ]
        header = source
        fix = (
            "Fix the value(s) in the config file (see config_template.yml for valid examples) "
            "or with --set KEY=VALUE"
        )
    listed = "; ".join(problems)
    end = "" if listed.endswith((".", "?", "!")) else "."
    return f"{header} has {len(problems)} problem(s): {listed}{end} {fix}."


# ---- bounded values ----------------------------------------------------------------
# A config is a few KB (the template about 6); anything this large is the wrong file or made to
# exhaust the parser, and is refused before a byte of it is read.
MAX_CONFIG_BYTES = 1_000_000


def check_size(path: Path) -> None:
    """A UserError when the config file is larger than ``MAX_CONFIG_BYTES``."""
    try:
        size = path.stat().st_size
    except OSError:
        return  # reading it reports the problem
    if size > MAX_CONFIG_BYTES:
        raise UserError(
            f"config file '{path}' is {size / 1e6:,.1f} MB; a config is a few KB and at most "
            f"{MAX_CONFIG_BYTES / 1e6:.0f} MB is read. Check that -c names the config file (not "
            "a data, log or checkpoint file), or start again from config_template.yml."
        )


# YAML aliases let a few hundred bytes stand for billions of values ("billion laughs"); the
# loader shares them, but validating or showing them would walk every copy.
MAX_VALUES = 100_000


def check_expansion(value: Any, source: str) -> None:
    """A UserError when ``value``, with its YAML aliases expanded, holds more than
    ``MAX_VALUES`` values or refers to itself."""
    sizes: dict[int, int] = {}
    visiting: set[int] = set()

    def size(node: Any) -> int:
        if not isinstance(node, (list, dict)):
            return 1
        key = id(node)
        if key in sizes:
            return sizes[key]
        if key in visiting:
            raise UserError(
                f"{source}: a YAML alias (*name) refers to the value that contains it. Write "
                "the value out instead of using anchors (&name) and aliases."
            )
        visiting.add(key)
        children = node.values() if isinstance(node, dict) else node
        total = 1
        for child in children:
            total += size(child)
            if total > MAX_VALUES:
                break
        visiting.discard(key)
        sizes[key] = min(total, MAX_VALUES + 1)
        return sizes[key]

    if size(value) > MAX_VALUES:
        raise UserError(
            f"{source}: the YAML holds more than {MAX_VALUES:,} values once its aliases (*name) "
            "are expanded. A config needs far fewer; write the values out instead of nesting "
            "anchors (&name) and aliases."
        )
