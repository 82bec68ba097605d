"""The one exception type for problems a user can fix, and the CLI wrapper that prints it."""

from __future__ import annotations

import argparse
import errno
import functools
import sys
from collections.abc import Callable
from typing import Any

from melcore.process import configure_process


class UserError(Exception):
    """Bad input, flags or files. The message names the file/flag, the problem and the fix."""


# What to do about an OSError a user can meet (full disk, a file where a folder should be...).
_OS_FIXES = {
    errno.ENOSPC: "free some disk space, then rerun the same command (it resumes)",
    errno.EDQUOT: "free some disk space, then rerun the same command (it resumes)",
    errno.EACCES: "choose a folder you can write to",
    errno.EPERM: "choose a folder you can write to",
    errno.EROFS: "choose a folder on a writable file system",
    errno.EEXIST: "a file is in the way of a folder; remove it or choose another path",
    errno.ENOTDIR: "a file is in the way of a folder; remove it or choose another path",
    errno.EISDIR: "a folder is in the way of a file; choose another path",
    errno.ENOENT: "check the path",
}


def one_line(exc: BaseException) -> str:
    """The message of `exc` as one line.

    A UserError raised in a worker process (DataLoader, multiprocessing) comes back with the
    worker's traceback in its message; the user needs only its last line."""
    if isinstance(exc, OSError):
        text = exc.strerror or str(exc)
        if exc.filename is not None:
            text = f"{exc.filename}: {text}"
        fix = _OS_FIXES.get(exc.errno or 0)
        return f"{text}; {fix}" if fix else text
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    if len(lines) <= 1:
        return lines[0] if lines else type(exc).__name__
    marker = f"{UserError.__module__}.{UserError.__name__}: "
    for line in reversed(lines):
        if line.startswith(marker):
            return line[len(marker) :]
    return " ".join(lines)


def _argparse_error(self: argparse.ArgumentParser, message: str) -> None:
    raise UserError(f"{message}; see {self.prog} --help")


def cli_main(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Run a script's main(): user errors (UserError, argparse errors, OSError such as a full
    disk or a file where a folder should be) become one `error: ...` line and exit status 2.

    This is the one place argparse errors become one line: every parser built while main()
    runs (argparse.ArgumentParser or a subclass) reports through UserError. The process
    defaults (melcore.process) are applied first."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        configure_process()
        original = argparse.ArgumentParser.error
        argparse.ArgumentParser.error = _argparse_error  # one line instead of usage + error
        try:
            return fn(*args, **kwargs)
        except (UserError, OSError) as exc:
            print(f"error: {one_line(exc)}", file=sys.stderr)
            sys.exit(2)
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr)
            sys.exit(130)
        finally:
            argparse.ArgumentParser.error = original

    return wrapper
