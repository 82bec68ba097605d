"""Key/value and text logging to log.txt, progress.csv and TensorBoard, upstream-style.

A `Logger` object owns its files; the module-level functions (logkv, logkv_mean, dumpkvs, log,
configure, get_dir) act on the one returned by the latest `configure()` so upstream-style code
keeps working, while library code can take a Logger explicitly.

Values passed to logkv_mean may be tensors: they are summed on their device and read back only
in dumpkvs, so logging every step costs no host-device synchronisation.
"""

from __future__ import annotations

import csv
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

FORMATS = ("stdout", "log", "csv", "tensorboard")


def _to_float(v: Any) -> float:
    if hasattr(v, "detach"):
        v = v.detach().float().cpu()
        return float(v.item()) if v.numel() == 1 else float(v.mean().item())
    return float(v)


class Logger:
    def __init__(self, dir: str | os.PathLike | None = None, formats=FORMATS, rank: int = 0):
        self.dir = Path(dir) if dir is not None else None
        # Only rank 0 writes files (and prints tables); other ranks still accept calls.
        self.formats = set(formats) if rank == 0 else set()
        if self.dir is None:
            self.formats -= {"log", "csv", "tensorboard"}
        self.rank = rank
        self._kv: dict[str, Any] = {}
        self._mean: dict[str, tuple[Any, int]] = {}
        self._tb = None
        self._csv_keys: list[str] = []
        if self.dir is not None and self.formats:
            self.dir.mkdir(parents=True, exist_ok=True)
            if (self.dir / "progress.csv").is_file():
                with open(self.dir / "progress.csv") as f:
                    self._csv_keys = next(csv.reader(f), [])

    # -- key/values ----------------------------------------------------------------------
    def logkv(self, key: str, value: Any) -> None:
        self._kv[key] = value
        self._mean.pop(key, None)

    def logkv_mean(self, key: str, value: Any, count: Any = 1) -> None:
        """Running mean; `value` is a mean over `count` items (a tensor `count` with a summed
        `value` works too when count is passed as a tensor: value is then the sum)."""
        total, n = self._mean.get(key, (0.0, 0))
        if hasattr(value, "detach"):
            value = value.detach()
        if hasattr(count, "detach"):
            self._mean[key] = (total + value, n + count.detach())
        else:
            self._mean[key] = (total + value * count, n + count)

    def getkvs(self) -> dict[str, float]:
        out = {k: _to_float(v) for k, v in self._kv.items()}
        for k, (total, n) in self._mean.items():
            n = _to_float(n)
            if n > 0:
                out[k] = _to_float(total) / n
        return out

    def dumpkvs(self, step: int | None = None) -> dict[str, float]:
        """Write the current key/values everywhere and clear them; returns what was written."""
        kvs = self.getkvs()
        self._kv.clear()
        self._mean.clear()
        if not kvs:
            return kvs
        if step is None and "step" in kvs:
            step = int(kvs["step"])
        table = self._table(kvs)
        if "stdout" in self.formats:
            self._print(table)
        if "log" in self.formats:
            with open(self.dir / "log.txt", "a") as f:
                f.write(table + "\n")
        if "csv" in self.formats:
            self._write_csv(kvs)
        if "tensorboard" in self.formats:
            tb = self.tensorboard()
            for k, v in kvs.items():
                if np.isfinite(v):
                    tb.add_scalar(k, v, step)
            tb.flush()
        return kvs

    @staticmethod
    def _table(kvs: dict[str, float]) -> str:
        width = max(len(k) for k in kvs)
        rows = [f"| {k:<{width}} | {v:<12.6g} |" for k, v in sorted(kvs.items())]
        dash = "-" * len(rows[0])
        return "\n".join([dash, *rows, dash])

    def _write_csv(self, kvs: dict[str, float]) -> None:
        path = self.dir / "progress.csv"
        new = [k for k in sorted(kvs) if k not in self._csv_keys]
        if new:
            # Widen the header: rewrite earlier rows with empty cells for the new columns.
            old_rows = []
            if path.is_file():
                with open(path) as f:
                    old_rows = list(csv.DictReader(f))
            self._csv_keys = self._csv_keys + new
            with open(path, "w", newline="") as f:
                w = csv.DictWriter(f, self._csv_keys)
                w.writeheader()
                w.writerows(old_rows)
        with open(path, "a", newline="") as f:
            csv.DictWriter(f, self._csv_keys).writerow({k: kvs.get(k, "") for k in self._csv_keys})

    # -- text and media --------------------------------------------------------------------
    def log(self, *args: Any) -> None:
        text = " ".join(str(a) for a in args)
        if "stdout" in self.formats:
            self._print(text)
        if "log" in self.formats:
            with open(self.dir / "log.txt", "a") as f:
                f.write(f"[{time.strftime('%Y-%m-%d %H:%M:%S')}] {text}\n")

    def warn(self, *args: Any) -> None:
        self.log("WARNING:", *args)

    @staticmethod
    def _print(text: str) -> None:
        # tqdm.write keeps an active progress bar intact.
        from tqdm import tqdm

        tqdm.write(text, file=sys.stdout)

    def tensorboard(self):
        """The SummaryWriter of this run (None when this logger writes no TensorBoard events)."""
        if "tensorboard" not in self.formats:
            return None
        if self._tb is None:
            from torch.utils.tensorboard import SummaryWriter

            self._tb = SummaryWriter(str(self.dir))
        return self._tb

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()
            self._tb = None


_current = Logger(None, formats=("stdout",))


def configure(dir: str | os.PathLike | None = None, format_strs=FORMATS, rank: int | None = None) -> Logger:
    """Start logging into `dir` (rank 0 only writes) and make it the module-level logger."""
    global _current
    if rank is None:
        from melcore import dist_util

        rank = dist_util.get_rank()
    _current.close()
    _current = Logger(dir, format_strs, rank)
    return _current


def get_current() -> Logger:
    return _current


def get_dir() -> str | None:
    return str(_current.dir) if _current.dir is not None else None


def logkv(key: str, value: Any) -> None:
    _current.logkv(key, value)


def logkv_mean(key: str, value: Any, count: Any = 1) -> None:
    _current.logkv_mean(key, value, count)


def dumpkvs(step: int | None = None) -> dict[str, float]:
    return _current.dumpkvs(step)


def getkvs() -> dict[str, float]:
    return _current.getkvs()


def log(*args: Any) -> None:
    _current.log(*args)


def warn(*args: Any) -> None:
    _current.warn(*args)
