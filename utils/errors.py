"""User-facing errors: one message naming the problem and the fix, exit code 2."""

from __future__ import annotations

import sys
from collections.abc import Callable


class UserError(Exception):
    """A problem the user can fix (bad config, missing data, bad argument).

    Command-line entry points print the message without a traceback and exit with code 2.
    """

    exit_code = 2


def run_cli(main: Callable[[], int | None]) -> None:
    """Run a script's main function, turning UserError into a message and exit code 2."""
    try:
        code = main()
    except UserError as err:
        print(f"error: {user_message(err)}", file=sys.stderr)
        sys.exit(err.exit_code)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
    sys.exit(code or 0)


def user_message(err: UserError) -> str:
    """The message alone, also when a DataLoader worker raised it (PyTorch then wraps it in
    "Caught UserError in DataLoader worker process N" and the worker's whole traceback)."""
    if "Original Traceback" not in str(err):
        return str(err)
    return first_line(err).split("UserError: ", 1)[-1]


def first_line(err: BaseException) -> str:
    """The first line of an exception's text ("" when it has none); for an error raised in a
    DataLoader worker, the worker's own last line (the error it raised) instead of PyTorch's
    wrapping."""
    text = str(err).strip()
    if "Original Traceback" in text:
        text = [line for line in text.splitlines() if line.strip()][-1]
    return (text.splitlines() or [""])[0]
