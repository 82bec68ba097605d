"""Helpers shared by the benchmarks: device description, memory high-water marks, timing
workers that run interleaved so two modes see the same machine load, JSON output.

Numbers are ratios measured in one run. On a shared machine wall-clock speed drifts with
other jobs' load, so modes are measured turn about (A, B, A, B, ...) in separate processes
(separate processes also give each mode its own memory high-water mark) and the median
step is used; CPU seconds per step are reported beside wall-clock seconds.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import resource
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
PREFIX = "@@bench "  # worker -> parent protocol lines; everything else is passed through


# -- process memory -------------------------------------------------------------------------
def _status_kb(field: str) -> float | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return float(line.split()[1])
    except OSError:
        pass
    return None


def rss_mb() -> float:
    """Resident set size now, MB (Linux /proc; ru_maxrss elsewhere)."""
    kb = _status_kb("VmRSS")
    if kb is None:
        kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kb / 1024


def reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS counter (VmHWM) to the current RSS; False if unsupported."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def peak_rss_mb() -> float:
    """Peak RSS since the process start or the last reset_peak_rss(), MB."""
    kb = _status_kb("VmHWM")
    if kb is None:
        kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kb / 1024


def cpu_seconds() -> float:
    """CPU seconds (user + system, all threads) of this process."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


# -- devices ---------------------------------------------------------------------------------
def pick_device(name: str) -> str:
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        from melcore.errors import UserError

        raise UserError("--device cuda: no CUDA device here; use --device cpu or auto")
    return name


def describe_device(device: str) -> str:
    import torch

    if device.startswith("cuda"):
        return f"{torch.cuda.get_device_name(0)} (torch {torch.__version__})"
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    from improved_diffusion.fast import cpu_bf16_units

    units = {"amx": " + AMX bf16", "avx512_bf16": " + AVX-512 bf16"}.get(cpu_bf16_units(), "")
    return (
        f"{cpu}, {torch.get_num_threads()} threads of {os.cpu_count()} cores, "
        f"{torch.backends.cpu.get_cpu_capability()}{units} (torch {torch.__version__})"
    )


def sync(device: str) -> None:
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize()


def set_threads(n: int) -> None:
    import torch

    if n > 0:
        torch.set_num_threads(n)


# -- output ----------------------------------------------------------------------------------
def finite_positive(x: Any) -> bool:
    return isinstance(x, int | float) and math.isfinite(x) and x > 0


def write_result(path: str | None, result: dict) -> None:
    from melcore.atomic import write_json

    result = {
        "load_average_1min": round(os.getloadavg()[0], 2),
        # as this (parent) process runs; worker processes get their mode's value
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY") or "libgomp default",
        **result,
    }
    if path:
        write_json(path, result)
    print(json.dumps(result, indent=2, sort_keys=True))


def base_parser(doc: str) -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=doc.strip().split("\n\n")[0])
    ap.add_argument("--json", default=None, help="write the results here (JSON)")
    ap.add_argument("--quick", action="store_true", help="tiny sizes, seconds long (for tests)")
    ap.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    ap.add_argument("--threads", type=int, default=2, help="torch CPU threads (0: torch's default)")
    return ap


# -- interleaved workers ---------------------------------------------------------------------
def emit(kind: str, payload: Any = None) -> None:
    """Worker side: one protocol line to the parent."""
    sys.stdout.write(PREFIX + json.dumps({"kind": kind, "data": payload}) + "\n")
    sys.stdout.flush()


def serve(run_round, finish) -> None:
    """Worker side: answer 'round' with run_round()'s (wall_s, cpu_s), 'done' with finish()."""
    emit("ready")
    for line in sys.stdin:
        cmd = line.strip()
        if cmd == "round":
            emit("round", run_round())
        elif cmd == "done":
            emit("done", finish())
            return


class Worker:
    """A benchmark mode in its own process, driven one timed round at a time."""

    def __init__(self, name: str, argv: list[str], env: dict | None = None):
        self.name = name
        self.proc = subprocess.Popen(
            [sys.executable, *argv],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, **(env or {})},
            cwd=ROOT,
        )
        threading.Thread(target=self._pass_stderr, daemon=True).start()
        self.walls: list[float] = []
        self.cpus: list[float] = []

    def _pass_stderr(self) -> None:
        # An empty OMP_WAIT_POLICY (libgomp's default, see improved_diffusion.fast) makes
        # libgomp print a warning; everything else goes through.
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            if "OMP_WAIT_POLICY" not in line:
                sys.stderr.write(line)

    def _read(self, kind: str) -> Any:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if line.startswith(PREFIX):
                msg = json.loads(line[len(PREFIX) :])
                if msg["kind"] != kind:
                    raise RuntimeError(f"{self.name}: expected {kind}, got {msg['kind']}")
                return msg["data"]
            sys.stderr.write(line)
        code = self.proc.wait()
        raise RuntimeError(
            f"benchmark worker {self.name!r} exited with status {code} (see its stderr above)"
        )

    def _send(self, cmd: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(cmd + "\n")
        self.proc.stdin.flush()

    def wait_ready(self) -> None:
        self._read("ready")

    def round(self) -> None:
        self._send("round")
        wall, cpu = self._read("round")
        self.walls.append(wall)
        self.cpus.append(cpu)

    def finish(self) -> dict:
        self._send("done")
        out = self._read("done")
        self.proc.wait(timeout=60)
        return out

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def run_interleaved(workers: list[Worker], rounds: int) -> dict[str, dict]:
    """Start every worker, then time `rounds` rounds turn about; returns per-worker results.

    Each result has 'wall_s' and 'cpu_s' (medians over rounds), the raw lists, and whatever
    the worker's finish() reported (e.g. its peak memory).
    """
    try:
        for w in workers:
            w.wait_ready()
        for _ in range(rounds):
            for w in workers:
                w.round()
        out = {}
        for w in workers:
            out[w.name] = {
                "wall_s": statistics.median(w.walls),
                "cpu_s": statistics.median(w.cpus),
                "wall_s_all": [round(x, 4) for x in w.walls],
                **w.finish(),
            }
        return out
    finally:
        for w in workers:
            w.kill()


def timed(fn, device: str) -> tuple[float, float]:
    """(wall seconds, CPU seconds) of fn(), with the device synchronised at both ends."""
    sync(device)
    t, c = time.perf_counter(), cpu_seconds()
    fn()
    sync(device)
    return time.perf_counter() - t, cpu_seconds() - c
