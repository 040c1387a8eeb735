"""The SQLite databases kept under ``output_path`` (MLflow's ``mlflow.db``, the sweeps'
``sweeps.db``): their URL, and opening one that processes started together may be creating."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")
SQLITE = "sqlite:///"
OPEN_ATTEMPTS = 4


def sqlite_url(output_path: str | Path, filename: str) -> str:
    """``sqlite:///<output_path>/<filename>``, the path made absolute."""
    return f"{SQLITE}{(Path(output_path).resolve() / filename).as_posix()}"


def open_store(url: str, opener: Callable[[], T]) -> T:
    """``opener()``, which opens the database at ``url``; for SQLite its folder is made first.
    A failure to create a new database's tables (any SQLite failure, PostgreSQL's
    IntegrityError) is retried after 1, 2 and 3 s: processes started together race to create
    them, and the loser finds them made on its next try."""
    if url.startswith(SQLITE):
        Path(url[len(SQLITE) :]).parent.mkdir(parents=True, exist_ok=True)
    for attempt in range(OPEN_ATTEMPTS):
        try:
            return opener()
        except Exception as err:
            # PostgreSQL too: two processes creating the same tables collide on its catalog
            # (IntegrityError); any other failure there (password, host) is final.
            race = url.startswith("sqlite:") or "IntegrityError" in _class_names(err)
            if attempt + 1 == OPEN_ATTEMPTS or not race:
                raise
            time.sleep(1 + attempt)
    raise AssertionError("unreachable")  # the loop returns or raises


def _class_names(err: BaseException) -> set[str]:
    return {cls.__name__ for cls in type(err).__mro__}
