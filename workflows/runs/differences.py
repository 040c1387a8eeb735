"""What sets compared runs apart, honestly: the settings that differ (a key some runs lack is
shown as absent), the data each trained on, and which run is best by the thesis's criterion.

Left out, as they cannot change what a run learns: where and how it was watched (trackers,
logging, tags, description), where its files went, and how fast it ran (devices, workers,
caches, compilation). ``auto`` or ``null`` against the value it resolves to, and an empty
value against ``null``, are the same setting.
"""

from __future__ import annotations

from typing import Any

from workflows.runs.records import RunRecord

ABSENT = "(absent)"
OFF = "(off)"  # a setting whose switch is off in that run
BEST_CRITERION = (
    "Best run (*): the highest max validation accuracy, ties broken by the lower min "
    "validation loss (the thesis's choice)"
)
# Prefixes of the config keys that cannot change the result.
NO_EFFECT = (
    "loglevel",
    "logging_dir",
    "log_to_",
    "neptune_",
    "mlflow_",
    "tags",
    "description",
    "stanford_raw_data_path",
    "stanford_data_path",  # the data is shown on its own, with its number of classes
    "output_path",
    "num_workers",
    "accelerator",
    "devices",
    "num_nodes",
    "strategy",
    "cache_images",
    "cache_on_device",
    "valid_batch_size",
    "channels_last",
    "compile",
)
# Keys whose null / auto stands for a value that other settings decide.
_EARLY_STOP_PATIENCE = 15


def flatten(data: dict[str, Any]) -> dict[str, Any]:
    """A config as one level of dotted keys (``optimizer_params.weight_decay``); an
    augmentation's parameters stay one value (``image_augmentations.RandomAffine``)."""
    flat: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, dict) and value:
            flat.update({f"{key}.{k}": _compact(v) for k, v in value.items()})
        else:
            flat[key] = value
    return flat


def _compact(value: Any) -> Any:
    if isinstance(value, dict):
        return ", ".join(f"{k}={short_value(v)}" for k, v in value.items()) or None
    return value


# Settings that only act when another is on: (prefix, whether it acts in this run).
_GATES = (
    ("image_augmentations", lambda f: bool(f.get("augment_images"))),
    ("tensor_augmentations", lambda f: bool(f.get("augment_tensors"))),
    (
        "normalization_params_rgb",
        lambda f: f.get("normalize") and not f.get("convert_to_grayscale"),
    ),
    (
        "normalization_params_grayscale",
        lambda f: f.get("normalize") and f.get("convert_to_grayscale"),
    ),
    ("erase_background", lambda f: bool(f.get("crop_to_bboxes"))),
    ("lr_scheduler_params", lambda f: bool(f.get("lr_scheduler"))),
    ("compile_mode", lambda f: bool(f.get("compile"))),
    ("freeze_epochs", lambda f: bool(f.get("init_from"))),
)


def _resolved(key: str, value: Any, flat: dict[str, Any]) -> Any:
    """The value a run trained with: ``OFF`` for a setting its switch turns off, null for an
    empty value, and the value a null or ``auto`` stands for where other settings decide it."""
    for prefix, acts in _GATES:
        if key.split(".", 1)[0] == prefix and not acts(flat):
            return OFF
    if value in ("", [], {}, "auto"):
        value = None
    if key == "early_stop_patience" and value is None:
        plateau = flat.get("lr_scheduler") == "ReduceLROnPlateau"
        patience = flat.get("lr_scheduler_params.patience")
        return 3 * patience if plateau and isinstance(patience, int) else _EARLY_STOP_PATIENCE
    if key == "width_mult" and value is None:
        return 1.0
    return value


def differing_settings(records: list[RunRecord]) -> list[str]:
    """The dotted config keys whose values are not the same in every run, in the config's
    order; each record's ``settings`` gets its values (``ABSENT`` where it lacks the key)."""
    with_config = [r for r in records if r.config]
    flats = [flatten(r.config) for r in with_config]
    resolved = [{k: _resolved(k, v, f) for k, v in f.items()} for f in flats]
    keys: list[str] = []
    for flat in flats:
        keys += [k for k in flat if k not in keys and not k.startswith(NO_EFFECT)]
    # A mapping that is null in one run and filled in another: its keys say it all.
    keys = [k for k in keys if not any(other.startswith(k + ".") for other in keys)]
    differing = [k for k in keys if len({_shown(r, k) for r in resolved}) > 1]
    for record, values in zip(with_config, resolved, strict=True):
        record.settings = {
            k: values.get(k, OFF if _gated_off(k, values) else ABSENT) for k in differing
        }
    return differing


def _shown(values: dict[str, Any], key: str) -> str:
    if key in values:
        return repr(values[key])
    return repr(OFF) if _gated_off(key, values) else ABSENT


def _gated_off(key: str, values: dict[str, Any]) -> bool:
    """Whether the mapping that ``key`` belongs to is switched off in this run."""
    parent = key.split(".", 1)[0]
    return values.get(parent) == OFF or any(
        k.startswith(parent + ".") and v == OFF for k, v in values.items()
    )


def data_text(data: tuple[str, int | None]) -> str:
    folder, classes = data
    return f"{folder} ({classes if classes is not None else '?'} classes)"


def data_groups(records: list[RunRecord]) -> dict[tuple[str, int | None], list[RunRecord]]:
    """The runs by the data they trained on, in order of first appearance."""
    groups: dict[tuple[str, int | None], list[RunRecord]] = {}
    for record in records:
        if record.config:
            groups.setdefault(record.data, []).append(record)
    return groups


def rank_key(record: RunRecord) -> tuple[float, float]:
    """Sorts the better run first: higher max valid_acc, then lower min valid_loss."""
    figures = record.figures()
    acc, loss = figures["max_valid_acc"], figures["min_valid_loss"]
    return (-acc if acc is not None else float("inf"), loss if loss is not None else float("inf"))


def mark_best(records: list[RunRecord]) -> None:
    """Set ``best`` on the best run of each data group: runs on other data are not ranked
    against each other."""
    for record in records:
        record.best = False
    for group in data_groups(records).values():
        scored = [r for r in group if r.figures()["max_valid_acc"] is not None]
        if scored:
            min(scored, key=rank_key).best = True


def ranked(records: list[RunRecord]) -> list[RunRecord]:
    """The runs, best first (stable for ties)."""
    return sorted(records, key=rank_key)


def data_note(records: list[RunRecord]) -> str:
    """One paragraph about the data: what it is when the runs share it, a warning when not."""
    groups = data_groups(records)
    if len(groups) == 1:
        return f"Data: {data_text(next(iter(groups)))} for every run."
    listing = "; ".join(
        f"{data_text(data)}: {', '.join(r.header for r in group)}" for data, group in groups.items()
    )
    return (
        f"WARNING: these runs were trained on different data ({listing}). Their figures are "
        "not comparable, so each run is ranked only against runs on the same data."
    )


def short_value(value: Any) -> str:
    """A table cell: floats shortened, lists in brackets, absent and None shown as such."""
    if value is None:
        return "null"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(short_value(v) for v in value) + "]"
    return str(value)
