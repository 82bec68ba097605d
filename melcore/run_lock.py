"""One owner per run folder: an exclusive `fcntl.flock` on `<folder>/.lock`.

The lock belongs to the open file, so it dies with the process (even after SIGKILL); the file
holds who took it (JSON: host, pid, started, command, what) so that a second job can say who
is in the way. A lock file whose flock nobody holds is left over from a dead process and is
taken over, with one line saying so. A clean release removes the file (and the folder, when
the lock created it and nothing else was written there).

    with RunLock(log_dir, "diffusion training"):
        ...

`lock_run_folder` does the same for a multi-process run: rank 0 locks, every other rank waits
for rank 0's answer and stops with the same error when rank 0 could not lock.
Within one process a folder already held is not locked again (nested use is a no-op), so a
step that calls another step on the same folder does not deadlock.

`python -m melcore.run_lock --hold DIR [--what TEXT] -- CMD...` runs CMD while holding DIR's
lock (scripts/demo.sh uses it); its exit status is CMD's, or 2 when DIR is in use.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import fcntl
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from melcore.atomic import ensure_dir
from melcore.errors import UserError, cli_main

LOCK_NAME = ".lock"

# Folders this process holds (resolved path -> nesting depth) and their locked fds.
_held: dict[str, int] = {}
_fds: set[int] = set()
_fork_hook = False


def _close_in_child() -> None:
    """A forked child (DataLoader or pool worker) must not keep the parent's lock alive after
    the parent dies; closing its copy of the fd leaves the parent's lock in place."""
    for fd in list(_fds):
        with contextlib.suppress(OSError):
            os.close(fd)
    _fds.clear()
    _held.clear()


def _command() -> str:
    argv = list(sys.argv) or ["python"]
    argv[0] = os.path.basename(argv[0])
    text = " ".join(argv)
    return text if len(text) <= 160 else text[:157] + "..."


def _read_holder(fd: int) -> dict:
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        data = os.read(fd, 65536)
        holder = json.loads(data.decode("utf-8")) if data.strip() else {}
    except (OSError, ValueError, UnicodeDecodeError):
        return {}
    return holder if isinstance(holder, dict) else {}


def describe(holder: dict) -> str:
    """'pid 1234 on host h since 2026-...T... (what: command)' from a lock file's JSON."""
    if not holder:
        return "another process (it has not written its name yet)"
    text = f"pid {holder.get('pid', '?')} on host {holder.get('host', '?')}"
    if holder.get("started"):
        text += f" since {holder['started']}"
    detail = ": ".join(str(holder[k]) for k in ("what", "command") if holder.get(k))
    return f"{text} ({detail})" if detail else text


class RunLock:
    """Exclusive ownership of `folder` (created when missing) for this process.

    acquire() raises UserError at once when another live process holds it; release() (or
    leaving the `with` block, also on an exception) lets it go. `took_over` is the note about
    a lock left by a dead process, or None; it is also printed to stderr (or given to `note`).
    """

    def __init__(
        self,
        folder: str | os.PathLike,
        what: str,
        note: Callable[[str], None] | None = None,
        flag: str = "",
    ):
        self.folder = Path(folder)
        self.flag = flag
        self.what = what
        self.note = note
        self.took_over: str | None = None
        self._fd: int | None = None
        self._key: str | None = None
        self._created = False
        self._pid = os.getpid()

    @property
    def path(self) -> Path:
        return self.folder / LOCK_NAME

    def acquire(self) -> RunLock:
        if self._key is not None:
            return self
        key = os.path.realpath(self.folder)
        self._pid = os.getpid()
        if key in _held:  # this process already owns it: nested use
            _held[key] += 1
            self._key = key
            return self
        self._created = not self.folder.exists()
        ensure_dir(self.folder, self.flag)
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                holder = _read_holder(fd)
                os.close(fd)
                if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    raise
                raise UserError(
                    f"{self.folder}: in use by {describe(holder)}; wait for it or use another folder"
                ) from None
            # The holder we waited on may have removed the file on release: lock the live one.
            try:
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        old = _read_holder(fd)
        if old:
            who = f"pid {old.get('pid', '?')} on host {old.get('host', '?')}"
            self.took_over = f"{self.folder}: took over the lock of {who} (not running)"
            (self.note or (lambda line: print(line, file=sys.stderr, flush=True)))(self.took_over)
        info = {
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "started": time.strftime("%Y-%m-%dT%H:%M:%S"),
            "command": _command(),
            "what": self.what,
        }
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(info) + "\n").encode("utf-8"), 0)
        os.fsync(fd)
        self._fd, self._key = fd, key
        _held[key] = 1
        _fds.add(fd)
        global _fork_hook
        if not _fork_hook:
            os.register_at_fork(after_in_child=_close_in_child)
            _fork_hook = True
        return self

    def release(self) -> None:
        key, self._key = self._key, None
        if key is None or key not in _held or os.getpid() != self._pid:
            return  # not held, or a forked child's copy (closed at fork)
        _held[key] -= 1
        if _held[key] > 0 or self._fd is None:
            return
        del _held[key]
        fd, self._fd = self._fd, None
        _fds.discard(fd)
        # Remove the file while still holding the lock; a waiter that opened the old file
        # notices (inode check in acquire) and retries on a fresh one.
        with contextlib.suppress(OSError):
            os.unlink(self.path)
        os.close(fd)
        if self._created:
            with contextlib.suppress(OSError):
                self.folder.rmdir()  # only when empty: nothing was written

    def fileno(self) -> int | None:
        return self._fd

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


@contextlib.contextmanager
def lock_run_folder(
    folder: str | os.PathLike,
    what: str,
    note: Callable[[str], None] | None = None,
    flag: str = "",
) -> Iterator[RunLock | None]:
    """RunLock for a run of one or many processes: only rank 0 locks; the other ranks wait
    for its answer (a broadcast) and raise the same UserError when rank 0 could not lock."""
    from melcore import dist_util  # lazy: the --hold entry point needs no torch

    if dist_util.get_world_size() == 1:
        with RunLock(folder, what, note, flag) as lock:
            yield lock
        return
    lock, error = None, None
    if dist_util.is_main():
        try:
            lock = RunLock(folder, what, note, flag).acquire()
        except UserError as exc:
            error = str(exc)
    error = dist_util.broadcast_object(error)
    if error is not None:
        raise UserError(error)
    try:
        yield lock
    finally:
        if lock is not None:
            lock.release()


@cli_main
def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(
        prog="python -m melcore.run_lock",
        description="Run a command while holding a folder's run lock.",
    )
    p.add_argument("--hold", required=True, help="the folder to lock (created when missing)")
    p.add_argument("--what", default="", help="what holds it, shown to a second job")
    p.add_argument("cmd", nargs=argparse.REMAINDER, help="-- command and its arguments")
    a = p.parse_args(argv)
    cmd = a.cmd[1:] if a.cmd[:1] == ["--"] else a.cmd
    if not cmd:
        raise UserError(
            "a command to run is required after --; see python -m melcore.run_lock --help"
        )
    with RunLock(a.hold, a.what or os.path.basename(cmd[0])):
        try:
            child = subprocess.Popen(cmd)
        except OSError as exc:
            raise UserError(f"{cmd[0]}: cannot run ({exc.strerror})") from None
        # SIGTERM goes on to the command; the lock is released once it has ended.
        signal.signal(signal.SIGTERM, lambda signum, frame: child.send_signal(signum))
        while True:
            try:
                rc = child.wait()
                break
            except KeyboardInterrupt:  # the command got Ctrl-C too: wait for it
                continue
    sys.exit(rc if rc >= 0 else 128 - rc)


if __name__ == "__main__":
    main()
