"""The one exception type for problems a user can fix, and the CLI wrapper that prints it."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import Any


class UserError(Exception):
    """Bad input, flags or files. The message names the file/flag, the problem and the fix."""


def cli_main(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Run a script's main(): a UserError becomes one line on stderr and exit status 2."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except UserError as exc:
            print(f"error: {exc}", file=sys.stderr)
            sys.exit(2)
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr)
            sys.exit(130)

    return wrapper
