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
    text = str(err)
    if "Original Traceback" not in text:
        return text
    last = [line for line in text.strip().splitlines() if line.strip()][-1]
    return last.split("UserError: ", 1)[-1]
