"""Names from the config resolve to classes through tables, never through code.

A table maps the names a user may write to the one kind of class each must be (an optimizer, a
scheduler, a torchvision transform, ...); the tables live beside what they build. This module
holds what they share: collecting a module's classes of one kind, the lookup, and the
closest-name suggestion every error message uses.
"""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Iterable
from types import ModuleType


class NameError_(ValueError):
    """A config name that does not resolve; the message gives the closest valid name."""


# How alike (difflib's ratio) a name must be to be suggested: a dropped, doubled or swapped
# letter scores above 0.8; at 0.5 unrelated names of similar length matched ('not_a_key' ->
# 'neptune_api_token').
_CLOSE_RATIO = 0.75
# A typed name that is a whole part of a valid one ('data_path' of 'stanford_data_path') is
# close too, when it is at least this long ('lr' is not 'lr_scheduler').
_MIN_PART = 5


def closest(name: object, options: Iterable[str]) -> str:
    """A hint like "did you mean 'AdamW'?", or the list of valid names when none is close."""
    options = sorted(options)
    match = close_name(name, options)
    if match is not None:
        return f"did you mean '{match}'?"
    return "valid names: " + ", ".join(options)


def close_name(name: object, options: Iterable[str]) -> str | None:
    """The valid name ``name`` is most likely a typo of, or None when none is close: the same
    name in another case, one that differs by a letter or two, or one that ``name`` is a whole
    ``_``-separated part of."""
    text, options = str(name), sorted(options)
    lowered = {o.lower(): o for o in options}
    if text.lower() in lowered:  # a wrong case is the likeliest typo
        return lowered[text.lower()]
    match = difflib.get_close_matches(text, options, n=1, cutoff=_CLOSE_RATIO)
    if match:
        return match[0]
    if len(text) >= _MIN_PART:
        parts = [o for o in options if f"_{text.lower()}_" in f"_{o.lower()}_"]
        if len(parts) == 1:  # several: no one of them is the likely meaning
            return parts[0]
    return None


def classes_in(module: ModuleType, base: type, exclude: Iterable[str] = ()) -> dict[str, type]:
    """The public classes of ``module`` that subclass ``base`` (``base`` itself excluded)."""
    excluded = set(exclude)
    found = {}
    for attr in dir(module):
        if attr.startswith("_") or attr in excluded:
            continue
        obj = getattr(module, attr)
        if inspect.isclass(obj) and issubclass(obj, base) and obj is not base:
            found[attr] = obj
    return found


def resolve(name: object, table: dict[str, type], what: str) -> type:
    """``table[name]``, or ``NameError_`` saying the name is not ``what`` and what is closest."""
    if not isinstance(name, str) or name not in table:
        raise NameError_(f"'{name}' is not {what}; {closest(name, table)}")
    return table[name]
