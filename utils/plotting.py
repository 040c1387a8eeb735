"""matplotlib's pyplot, imported on the first figure drawn: it takes about a second to import,
and most commands draw nothing (a config mistake, a run without MLflow, a prediction)."""

from __future__ import annotations

from functools import cache
from types import ModuleType


@cache
def pyplot() -> ModuleType:
    """``matplotlib.pyplot``, drawing to files only."""
    import matplotlib

    matplotlib.use("Agg")  # files only, never a window; must precede pyplot
    import matplotlib.pyplot as plt

    return plt


@cache
def ticker() -> ModuleType:
    """``matplotlib.ticker`` (formatters and locators), with pyplot set up first."""
    pyplot()
    import matplotlib.ticker

    return matplotlib.ticker


@cache
def lines() -> ModuleType:
    """``matplotlib.lines`` (legend handles), with pyplot set up first."""
    pyplot()
    import matplotlib.lines

    return matplotlib.lines
