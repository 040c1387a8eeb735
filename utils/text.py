"""Values shown in messages: bounded in length whatever their size, and secrets masked."""

from __future__ import annotations

import os
import re
import reprlib
from collections.abc import Iterable
from pathlib import Path

MASK = "***"
_NOT_SECRETS = frozenset({"null", "none", "~", "***"})  # YAML's empty values are no secret
MAX_SHOWN = 80

_REPR = reprlib.Repr()
_REPR.maxlevel = 3
_REPR.maxlist = _REPR.maxtuple = _REPR.maxdict = _REPR.maxset = 6
_REPR.maxstring = _REPR.maxother = MAX_SHOWN


def short(value: object, limit: int = MAX_SHOWN) -> str:
    """A repr of at most ``limit`` characters; never walks more than a few elements of a
    container, so a huge or self-referencing value costs nothing to show."""
    return clip(_REPR.repr(value), limit)


def clip(text: str, limit: int = MAX_SHOWN) -> str:
    """``text`` cut to ``limit`` characters, with ``...`` and the full length when cut."""
    text = str(text)
    if len(text) <= limit:
        return text
    return f"{text[: max(0, limit - 3)]}... ({len(text):,} characters)"


def shown_path(path: str | Path) -> str:
    """How the scripts print a path: relative to the working folder when inside it (as typed
    in the usual case), else absolute."""
    absolute = Path(os.path.abspath(path))
    try:
        return str(absolute.relative_to(Path.cwd()))
    except ValueError:
        return str(absolute)


def secret_values(text: str, keys: Iterable[str]) -> list[str]:
    """The values written after ``key:`` or ``key=`` in ``text`` (a YAML file or a ``--set``),
    with and without quotes, whether or not the line parses; longest first."""
    found: set[str] = set()
    for key in keys:
        pattern = rf"{re.escape(key)}\s*[:=]\s*(\S(?:.*\S)?)"
        for match in re.finditer(pattern, text):
            value = match.group(1)
            for candidate in (value, value.strip("'\""), value.split("#")[0].strip().strip("'\"")):
                if len(candidate) >= 3 and candidate.lower() not in _NOT_SECRETS:
                    found.add(candidate)
    return sorted(found, key=len, reverse=True)


def mask(text: str, secrets: Iterable[str]) -> str:
    """``text`` with every occurrence of each secret replaced by ``***``."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, MASK)
    return text


# scheme://user:password@host: the user-information part of a URL, up to the last "@" before
# the path (a password may hold an unescaped "@"); text around the URL is left alone.
_URL_USERINFO = re.compile(r"\b([A-Za-z][A-Za-z0-9+.-]*://)[^\s/?#'\"<>@]*(?:@[^\s/?#'\"<>@]*)*@")


def without_credentials(text: str) -> str:
    """``text`` (a URL, or a message, log line or file holding URLs) with the user name and
    password of every URL removed: ``http://alice:pw@host:5000`` -> ``http://host:5000``."""
    return _URL_USERINFO.sub(r"\1", str(text))
