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


def closest(name: object, options: Iterable[str]) -> str:
    """A hint like "did you mean 'AdamW'?", or the list of valid names when none is close."""
    options = sorted(options)
    lowered = {o.lower(): o for o in options}
    if str(name).lower() in lowered:  # a wrong case is the likeliest typo
        match = [lowered[str(name).lower()]]
    else:
        match = difflib.get_close_matches(str(name), options, n=1, cutoff=0.5)
    if match:
        return f"did you mean '{match[0]}'?"
    return "valid names: " + ", ".join(options)


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
