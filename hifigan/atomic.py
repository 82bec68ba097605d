"""Atomic file writes: write to a temp file in the same folder, fsync, rename.

A reader (or a rerun after a crash) sees either the old file or the complete new one, never
half of it. Every artefact the project writes (mels, checkpoints, JSON, WAV) goes through here.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import numpy as np


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "wb", fsync: bool = True) -> Iterator[IO]:
    """Open a temp file beside `path`; on clean exit it replaces `path`, on error it is removed.

    fsync=False keeps the rename's atomicity (a killed process leaves the old file or the
    new one) but skips the flush to disk, which costs milliseconds per file; bulk writers of
    many small files whose readers validate them on resume (WAV length, .npy shape) use it.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
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
