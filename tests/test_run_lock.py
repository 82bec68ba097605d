"""One owner per run folder (melcore.run_lock): real second processes are refused at once with
one line naming the holder; a lock left by a SIGKILLed process is taken over and said so."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from tiny_mels import make_melset, tiny_train_args, to_flags

from melcore.errors import UserError
from melcore.run_lock import LOCK_NAME, RunLock, lock_run_folder

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
HOLD = (
    "import sys, time\n"
    "from melcore.run_lock import RunLock\n"
    "RunLock(sys.argv[1], 'test holder').acquire()\n"
    "print('ready', flush=True)\n"
    "time.sleep(120)\n"
)


def _holder(folder: Path) -> subprocess.Popen:
    """A real process that owns `folder` until killed."""
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(folder)], env=ENV, stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout.readline().strip() == "ready"
    return proc


def _kill(proc: subprocess.Popen) -> None:
    proc.kill()
    proc.wait(timeout=30)


def _refusal(folder: Path, pid: int) -> str:
    return f"{folder}: in use by pid {pid} on host "


def test_second_holder_refused_with_one_line(tmp_path):
    folder = tmp_path / "run"
    proc = _holder(folder)
    try:
        info = json.loads((folder / LOCK_NAME).read_text())
        assert info["pid"] == proc.pid and info["what"] == "test holder"
        assert {"host", "started", "command"} <= info.keys()
        with pytest.raises(UserError) as err:
            RunLock(folder, "second").acquire()
        msg = str(err.value)
        assert "\n" not in msg
        assert msg.startswith(_refusal(folder, proc.pid))
        assert f"since {info['started']}" in msg and "test holder" in msg
        assert msg.endswith("; wait for it or use another folder")
        # the holder is untouched by the refusal
        assert json.loads((folder / LOCK_NAME).read_text())["pid"] == proc.pid
    finally:
        _kill(proc)


def test_stale_lock_of_killed_process_is_taken_over(tmp_path, capsys):
    folder = tmp_path / "run"
    proc = _holder(folder)
    dead = proc.pid
    _kill(proc)  # SIGKILL: no release, the lock file stays behind, its flock is gone
    assert json.loads((folder / LOCK_NAME).read_text())["pid"] == dead
    notes = []
    with RunLock(folder, "new owner", note=notes.append) as lock:
        assert (
            lock.took_over
            == f"{folder}: took over the lock of pid {dead} on host {os.uname().nodename} (not running)"
        )
        assert notes == [lock.took_over]
        assert json.loads((folder / LOCK_NAME).read_text())["pid"] == os.getpid()
    assert not (folder / LOCK_NAME).exists()
    # without a note callback the line goes to stderr
    _kill(proc2 := _holder(folder))
    with RunLock(folder, "again"):
        pass
    assert f"took over the lock of pid {proc2.pid}" in capsys.readouterr().err


def test_released_after_failure_and_nested_use(tmp_path):
    folder = tmp_path / "run"
    with pytest.raises(RuntimeError), RunLock(folder, "failing"):
        raise RuntimeError("boom")
    assert not folder.exists()  # created by the lock, nothing written: removed again
    folder.mkdir()
    with RunLock(folder, "outer"):
        with RunLock(folder, "inner"), lock_run_folder(folder, "innermost"):
            pass
        assert (folder / LOCK_NAME).exists()  # still held by the outer owner
    assert folder.is_dir() and not (folder / LOCK_NAME).exists()
    # a later process can take it at once
    _kill(_holder(folder))


def test_hold_entry_point(tmp_path):
    folder = tmp_path / "demo"
    cmd = [sys.executable, "-m", "melcore.run_lock", "--hold", str(folder), "--what", "demo", "--"]
    done = subprocess.run(
        [*cmd, sys.executable, "-c", "import sys; sys.exit(3)"],
        env=ENV,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 3 and not (folder / LOCK_NAME).exists()
    proc = _holder(folder)
    try:
        done = subprocess.run([*cmd, "true"], env=ENV, capture_output=True, text=True, timeout=60)
        assert done.returncode == 2
        assert done.stderr.strip().startswith(f"error: {_refusal(folder, proc.pid)}")
        assert len(done.stderr.strip().splitlines()) == 1
    finally:
        _kill(proc)


def test_two_mel_train_on_one_log_dir(tmp_path):
    mels = make_melset(tmp_path / "mels")
    run = tmp_path / "run"
    flags = to_flags(
        tiny_train_args(mels, run, max_steps=100000, save_interval=100000, log_interval=1000)
    )
    train = [sys.executable, str(ROOT / "scripts" / "mel_train.py"), *flags]
    first = subprocess.Popen(
        train, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    try:
        lock = run / LOCK_NAME
        deadline = time.monotonic() + 120
        while not (lock.exists() and lock.read_text().strip()):
            assert first.poll() is None, first.stderr.read()[-2000:]
            assert time.monotonic() < deadline, "the first run never took its lock"
            time.sleep(0.2)
        t0 = time.monotonic()
        second = subprocess.run(train, env=ENV, capture_output=True, text=True, timeout=120)
        assert second.returncode == 2, second.stderr[-2000:]
        lines = second.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(f"error: {_refusal(run, first.pid)}")
        assert "diffusion training: mel_train.py" in lines[0]
        assert time.monotonic() - t0 < 60  # refused before any model or data is built
        assert first.poll() is None  # the owner goes on
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=30)


def test_prep_into_a_folder_in_use_refused(tmp_path):
    import numpy as np
    import soundfile as sf

    out = tmp_path / "mels"
    (tmp_path / "audio").mkdir()
    sf.write(str(tmp_path / "audio" / "a.wav"), 0.1 * np.sin(np.arange(16000) / 5.0), 16000)
    proc = _holder(out)
    try:
        done = subprocess.run(
            [
                sys.executable,
                str(ROOT / "scripts" / "prep_mels.py"),
                "--input",
                str(tmp_path / "audio"),
                "--output",
                str(out),
            ],
            env=ENV,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 2
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(f"error: {_refusal(out, proc.pid)}"), (
            done.stderr
        )
        assert sorted(p.name for p in out.iterdir()) == [LOCK_NAME]  # nothing written
    finally:
        _kill(proc)
