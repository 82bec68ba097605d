"""Atomic file writes: write to a temp file in the same folder, fsync, rename.

A reader (or a rerun after a crash) sees either the old file or the complete new one, never
half of it. Every artefact the project writes (mels, checkpoints, JSON, WAV) goes through here.

Temp files are named `.{name}.{pid}.{random}.tmp`. A process killed mid-write (SIGKILL, OOM,
power loss) cannot remove its temp file, so the next write of the same path removes the temp
files of `name` whose writer process is gone: a rerun of the same command cleans up after the
run that was killed.
"""

from __future__ import annotations

import contextlib
import glob
import io
import json
import os
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import numpy as np

from melcore.errors import UserError

# `{pid}.{random}` (this module's temps) or mkstemp's bare 8 characters (older temps).
_TEMP_MIDDLE = re.compile(r"^(?:(\d+)\.)?[a-z0-9_]{8}$")


def current_umask() -> int:
    """The process umask, read without changing it (Linux: /proc/self/status). Where that file
    is missing the umask is set and restored at once, at write time, never at import."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _process_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        with open(f"/proc/{pid}/stat") as f:
            # A zombie (killed, not yet reaped) is as dead as a writer can be.
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_temps(path: str | os.PathLike) -> list[Path]:
    """Delete temp files of earlier writes of `path` whose writer process no longer runs."""
    path = Path(path)
    prefix = f".{path.name}."
    removed = []
    for cand in path.parent.glob(glob.escape(prefix) + "*.tmp"):
        m = _TEMP_MIDDLE.match(cand.name[len(prefix) : -len(".tmp")])
        if m is None or (m.group(1) is not None and _process_alive(int(m.group(1)))):
            continue  # another file's temp, or a write still in progress
        with contextlib.suppress(FileNotFoundError):
            cand.unlink()
            removed.append(cand)
    return removed


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "wb", fsync: bool = True) -> Iterator[IO]:
    """Open a temp file beside `path`; on clean exit it replaces `path`, on error it is removed.

    fsync=False keeps the rename's atomicity (a killed process leaves the old file or the
    new one) but skips the flush to disk, which costs milliseconds per file; bulk writers of
    many small files whose readers validate them on resume (WAV length, .npy shape) use it.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(path)
    fd, tmp = tempfile.mkstemp(
        prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp", dir=path.parent
    )
    # mkstemp creates 0600; outputs get the usual permissions of a new file (0666 & ~umask).
    os.fchmod(fd, 0o666 & ~current_umask())
    try:
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            if fsync:
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def ensure_dir(path: str | os.PathLike, flag: str = "") -> Path:
    """Create output folder `path` before any work is done, or stop with a one-line error
    (a file in the way, no permission, read-only or full file system)."""
    path = Path(path)
    name = f"{flag} {path}" if flag else str(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise UserError(
            f"{name}: a file is in the way (not a folder); choose another path"
        ) from None
    except OSError as exc:
        raise UserError(
            f"{name}: cannot create the folder ({exc.strerror}); choose a writable path"
        ) from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise UserError(f"{name}: folder is not writable; choose another path")
    return path


def write_bytes(path: str | os.PathLike, data: bytes, fsync: bool = True) -> None:
    with atomic_open(path, "wb", fsync=fsync) as f:
        f.write(data)


def write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_open(path, "w") as f:
        f.write(text)


def write_json(path: str | os.PathLike, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def save_npy(path: str | os.PathLike, array: np.ndarray, fsync: bool = True) -> None:
    with atomic_open(path, "wb", fsync=fsync) as f:
        np.save(f, array)


def torch_save(path: str | os.PathLike, obj: Any) -> None:
    """torch.save through a buffer so a failed write (ENOSPC, kill) never truncates `path`."""
    import torch

    buf = io.BytesIO()
    torch.save(obj, buf)
    write_bytes(path, buf.getvalue())


def save_figure(fig: Any, path: str | os.PathLike, dpi: int | None = None) -> Path:
    """Write a matplotlib figure as PNG atomically (parent folders made) and close it."""
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_open(path, "wb") as f:
        fig.savefig(f, format="png", **({"dpi": dpi} if dpi else {}))
    plt.close(fig)
    return path
