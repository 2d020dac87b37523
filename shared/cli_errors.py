"""How every command-line entry point reports bad input: one line, no traceback, exit code 2."""

from __future__ import annotations

import sys
from collections.abc import Callable


def run_reporting_errors(main: Callable[[], object], expected: tuple[type[BaseException], ...]) -> int:
    """Run `main()`. An expected error (bad input: the file and what is wrong with it) prints
    `error: <message>` on stderr and gives exit code 2; anything else propagates with its traceback.
    An int returned by `main` is the exit code; anything else means success."""
    try:
        outcome = main()
    except expected as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return outcome if isinstance(outcome, int) and not isinstance(outcome, bool) else 0
