"""Crashes: SIGKILL at seeded random moments (and in the middle of writing a checkpoint) during
prep, training and sampling; rerunning the same command completes and gives exactly what an
uninterrupted run gives, with no temp files left. SIGINT/SIGTERM during training save a
checkpoint and exit cleanly. Real subprocesses throughout (each in its own process group, so a
kill also takes worker processes, as a terminal or an OOM kill of the job would).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from hardening_fixtures import (
    ROOT,
    TINY_STEPS,
    TINY_TRAIN_FLAGS,
    needs,
    run_script,
    script_cmd,
    script_env,
    snapshot,
    temp_files,
    tone,
    write_wav,
)

pytestmark = pytest.mark.slow


def start(cmd: list[str], log: Path) -> subprocess.Popen:
    f = open(log, "w")  # noqa: SIM115 (closed by the caller through proc.log)
    proc = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, env=script_env(), cwd=ROOT,
                            start_new_session=True)
    proc.log = f
    return proc


def kill_group(proc: subprocess.Popen, sig: int = signal.SIGKILL) -> None:
    try:
        os.killpg(proc.pid, sig)
    except ProcessLookupError:
        pass


def finish(proc: subprocess.Popen, timeout: float = 120) -> int:
    try:
        return proc.wait(timeout)
    finally:
        proc.log.close()


def wait_until(cond, proc: subprocess.Popen, timeout: float = 120, poll: float = 0.02) -> bool:
    """True once cond() holds; False when the process ended first."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return True
        if proc.poll() is not None:
            return cond()
        time.sleep(poll)
    kill_group(proc)
    raise AssertionError("timed out waiting for the process")


# -- prep -------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("crash") / "wavs"
    for i in range(16):
        write_wav(d / f"c{i:02d}.wav", tone(16000, 1.0, 0.3 + 0.02 * i, (200.0 + 37 * i, 900.0 + 11 * i)), 16000)
    return d


def prep_cmd(src: Path, out: Path) -> list[str]:
    return script_cmd("prep_mels.py", "--input", src, "--output", out, "--workers", 2, "--preset", "16k",
                      "--window_s", 1, "--quiet")


def assert_same_melset(a: Path, b: Path) -> None:
    leftovers = set(temp_files(a)) | set(temp_files(b))
    sa, sb = ({k: v for k, v in snapshot(p).items() if k not in leftovers} for p in (a, b))
    assert sorted(sa) == sorted(sb)
    for k in sa:
        if k != "stats.json":
            assert sa[k] == sb[k], f"{k} differs"
    # Sums merged from workers in completion order: equal up to float rounding.
    ja, jb = (json.loads((p / "stats.json").read_text()) for p in (a, b))
    assert ja.keys() == jb.keys()
    for key in ("clips", "frames", "min", "max", "mean", "std"):
        assert ja[key] == pytest.approx(jb[key], rel=1e-9)


def test_prep_killed_at_random_moments(clips, tmp_path):
    from datasets.prep import Options, prepare
    from melcore.mel_config import MelConfig

    # The reference in this process: a clip's mel does not depend on the number of workers.
    ref = tmp_path / "ref"
    prepare(clips, ref, MelConfig.from_preset("16k"), workers=1, options=Options(window_s=1.0), progress=False)
    out = tmp_path / "mels"
    rng = np.random.default_rng(20261126)
    for attempt in range(2):
        proc = start(prep_cmd(clips, out), tmp_path / f"prep{attempt}.log")
        started = wait_until(lambda: any(out.glob("*/*.npy")) or any(out.glob("*/.*.tmp")), proc)
        if started:
            time.sleep(rng.uniform(0.0, 0.4))
        kill_group(proc)
        finish(proc)
    r = subprocess.run(prep_cmd(clips, out), env=script_env(), cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert_same_melset(out, ref)
    assert not temp_files(out), temp_files(out)


# -- training ----------------------------------------------------------------------------------------
def train_cmd(data: Path, log_dir: Path, steps: int = TINY_STEPS, *extra) -> list[str]:
    return script_cmd("mel_train.py", "--data_dir", data, "--log_dir", log_dir, "--max_steps", steps,
                      *TINY_TRAIN_FLAGS, *extra)


def checkpoint_tensors(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


def assert_same_tensors(a, b, where: str = "") -> None:
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and torch.equal(a, b), f"tensor {where} differs"
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), f"keys of {where} differ"
        for k in a:
            assert_same_tensors(a[k], b[k], f"{where}/{k}")
    elif isinstance(a, list | tuple):
        assert len(a) == len(b)
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same_tensors(x, y, f"{where}[{i}]")
    else:
        assert a == b, f"{where}: {a!r} != {b!r}"


# Wall-clock seconds spent training (for --max_train_seconds) differ between any two runs.
WALL_CLOCK_KEYS = ("train_seconds",)


def assert_same_run(run: Path, ref: Path, step: int = TINY_STEPS) -> None:
    for name in (f"model{step:06d}.pt", f"ema_0.9999_{step:06d}.pt", f"opt{step:06d}.pt"):
        assert (run / name).is_file(), f"{name} missing"
        got, want = checkpoint_tensors(run / name), checkpoint_tensors(ref / name)
        if isinstance(got, dict) and isinstance(want, dict):
            for key in WALL_CLOCK_KEYS:
                assert (key in got) == (key in want), f"{name}: {key} in one run only"
                if key in got:
                    assert got[key] > 0, f"{name}: {key} not recorded"
                got, want = {k: v for k, v in got.items() if k != key}, {k: v for k, v in want.items() if k != key}
        assert_same_tensors(got, want, name)


@needs("mel_train.py")
def test_train_killed_at_a_random_moment(tiny_run, tiny_melset, tmp_path):
    run = tmp_path / "run"
    rng = np.random.default_rng(7)
    proc = start(train_cmd(tiny_melset, run), tmp_path / "train0.log")
    wait_until(lambda: (run / "model000002.pt").is_file(), proc)
    time.sleep(rng.uniform(0.0, 0.5))
    kill_group(proc)
    finish(proc)
    r = subprocess.run(train_cmd(tiny_melset, run), env=script_env(), cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert_same_run(run, tiny_run)
    assert not temp_files(run), temp_files(run)


KILL_WRAPPER = """
import os, runpy, signal, sys
sys.path.insert(0, {root!r})
import melcore.atomic as atomic
target, script = sys.argv[1], sys.argv[2]
sys.argv = sys.argv[2:]
real = atomic.write_bytes

def write_then_die(path, data, fsync=True):
    if os.path.basename(str(path)) == target:
        with atomic.atomic_open(path, "wb") as f:
            f.write(data[: len(data) // 2])
            f.flush()
            os.kill(os.getpid(), signal.SIGKILL)
    return real(path, data, fsync)

atomic.write_bytes = write_then_die
runpy.run_path(script, run_name="__main__")
"""


@needs("mel_train.py")
def test_train_killed_while_writing_a_checkpoint(tiny_run, tiny_melset, tmp_path):
    """SIGKILL half-way through writing the model file of the step-4 checkpoint (the last of its
    files: EMA and optimizer state are already there); the rerun resumes from step 2 and ends
    with exactly the parameters of the run that was never interrupted."""
    victim = f"model{TINY_STEPS:06d}.pt"
    wrapper = tmp_path / "kill_wrapper.py"
    wrapper.write_text(KILL_WRAPPER.format(root=str(ROOT)))
    run = tmp_path / "run"
    cmd = train_cmd(tiny_melset, run)
    p = subprocess.run([sys.executable, str(wrapper), victim, *cmd[1:]], env=script_env(), cwd=ROOT,
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == -signal.SIGKILL, p.stderr
    assert not (run / f"model{TINY_STEPS:06d}.pt").exists()
    r = subprocess.run(cmd, env=script_env(), cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "resuming from" in (run / "log.txt").read_text()
    assert_same_run(run, tiny_run)
    assert not temp_files(run), temp_files(run)


@needs("mel_train.py")
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_signal_saves_a_checkpoint_and_exits_cleanly(tiny_melset, tmp_path, sig):
    from improved_diffusion import checkpoint as ckpt

    run = tmp_path / "run"
    cmd = train_cmd(tiny_melset, run, 100000, "--save_interval", "100000")
    proc = start(cmd, tmp_path / "train.log")
    progress = run / "progress.csv"
    wait_until(lambda: progress.is_file() and len(progress.read_text().splitlines()) >= 3, proc)
    kill_group(proc, sig)
    code = finish(proc, 120)
    log = (tmp_path / "train.log").read_text()
    assert code == 0, log
    assert "Traceback" not in log
    step = ckpt.find_latest(run, [0.9999])
    assert step is not None and step >= 2, log
    assert "stopped by signal" in (run / "log.txt").read_text()
    assert not temp_files(run)
    if sig == signal.SIGTERM:
        r = run_script("mel_train.py", "--data_dir", tiny_melset, "--log_dir", run, "--max_steps", step + 1,
                       *TINY_TRAIN_FLAGS, "--save_interval", "100000")
        assert r.code == 0, r.err
        assert f"resuming from {run / ckpt.model_name(step)}" in (run / "log.txt").read_text()
        assert ckpt.find_latest(run, [0.9999]) == step + 1


# -- sampling ----------------------------------------------------------------------------------------
def sample_cmd(run: Path, out: Path) -> list[str]:
    return script_cmd("mel_sample.py", "--model_path", run, "--out_dir", out, "--num_samples", 4,
                      "--batch_size", 2, "--wav", "False", "--seed", 3)


@needs("mel_sample.py", "mel_train.py")
def test_sample_killed_then_rerun_gives_the_same_samples(tiny_run, tmp_path):
    ref = tmp_path / "ref"
    r = subprocess.run(sample_cmd(tiny_run, ref), env=script_env(), cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    out = tmp_path / "out"
    rng = np.random.default_rng(11)
    proc = start(sample_cmd(tiny_run, out), tmp_path / "sample.log")
    wait_until(lambda: out.is_dir() and any(out.iterdir()), proc, poll=0.005)
    time.sleep(rng.uniform(0.0, 0.05))
    kill_group(proc)
    finish(proc)
    r = subprocess.run(sample_cmd(tiny_run, out), env=script_env(), cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    ours, theirs = snapshot(out), snapshot(ref)
    data = [k for k in theirs if k.endswith((".npy", ".npz"))]
    assert len(data) == 5
    for k in data:
        assert ours.get(k) == theirs[k], f"{k} differs from the uninterrupted run"
    assert not temp_files(out), temp_files(out)
