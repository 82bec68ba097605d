"""Shared helpers and session fixtures for the hardening tests (tests/test_hardening_*.py).

Scripts run the way a user runs them. A real subprocess costs a torch import (~3 s of CPU),
so the many bad-input variants run the script's `__main__` in this process (same argv, same
`cli_main` wrapper, stdout/stderr captured, SystemExit turned into the exit code); crash and
signal tests, and one case per script, always use a real subprocess. Set
HARDENING_SUBPROCESS=1 to run every case in a subprocess.

Session fixtures (registered in conftest.py so they are built once):
  tiny_melset  a prepared mel set (16 mels, 16 kHz analysis) in the DESIGN.md layout
  tiny_run     a tiny diffusion run trained on it for TINY_STEPS steps (checkpoints every 2)
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import runpy
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = ROOT / "scripts"
FORCE_SUBPROCESS = os.environ.get("HARDENING_SUBPROCESS") == "1"

# Tiny model flags (mel_train.py / mel_sample.py / mel_nll.py): seconds per run on 2 cores.
TINY_NUM_MELS = 16
TINY_STEPS = 4
TINY_MODEL_FLAGS = [
    "--num_channels", "32", "--num_res_blocks", "1", "--channel_mult", "1,2",
    "--crop_width", "16", "--num_mels", str(TINY_NUM_MELS), "--diffusion_steps", "10",
    "--noise_schedule", "cosine",
    "--attention_resolutions", "",
]
TINY_TRAIN_FLAGS = [
    *TINY_MODEL_FLAGS, "--batch_size", "2", "--log_interval", "1", "--save_interval", "2",
    "--val_interval", "0", "--sample_interval", "0", "--num_workers", "0", "--seed", "0",
]


# -- running scripts --------------------------------------------------------------------------
@dataclass
class Result:
    code: int
    out: str
    err: str

    @property
    def error_lines(self) -> list[str]:
        return [line for line in self.err.splitlines() if line.startswith("error:")]


def script_env() -> dict[str, str]:
    env = dict(os.environ)
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONHASHSEED="0", TQDM_DISABLE="1",
               PYTHONUNBUFFERED="1")
    env.pop("RANK", None)
    env.pop("WORLD_SIZE", None)
    return env


def script_cmd(script: str, *args) -> list[str]:
    return [sys.executable, str(SCRIPTS / script), *map(str, args)]


def run_script(script: str, *args, subprocess_: bool = False, timeout: float = 180,
               cwd: Path | None = None) -> Result:
    """Run scripts/<script> with `args`; in this process unless `subprocess_` (or forced)."""
    if subprocess_ or FORCE_SUBPROCESS:
        p = subprocess.run(script_cmd(script, *args), capture_output=True, text=True,
                           timeout=timeout, env=script_env(), cwd=cwd or ROOT)
        return Result(p.returncode, p.stdout, p.stderr)
    out, err = io.StringIO(), io.StringIO()
    argv = [str(SCRIPTS / script), *map(str, args)]
    old_argv = sys.argv
    code = 0
    try:
        sys.argv = argv
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                runpy.run_path(str(SCRIPTS / script), run_name="__main__")
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
            except BaseException:  # what a subprocess would print before exiting 1
                import traceback

                traceback.print_exc(file=err)
                code = 1
    finally:
        sys.argv = old_argv
    return Result(code, out.getvalue(), err.getvalue())


def assert_user_error(r: Result, *needles: str) -> str:
    """Non-zero exit, no traceback, exactly one `error: ...` line naming every needle."""
    assert r.code != 0, f"expected failure, got exit 0\nstdout: {r.out}\nstderr: {r.err}"
    assert "Traceback" not in r.err, f"traceback instead of a one-line error:\n{r.err}"
    lines = r.error_lines
    assert len(lines) == 1, f"expected one 'error: ...' line, got:\n{r.err}"
    line = lines[0]
    for needle in needles:
        assert needle.lower() in line.lower(), f"{needle!r} not named in: {line}"
    return line


# -- output folder state ----------------------------------------------------------------------
TEMP_MARKERS = (".tmp", ".part")


def snapshot(root: Path) -> dict[str, str]:
    """{relative path: sha256} of every file below `root` (empty when it does not exist)."""
    root = Path(root)
    if not root.exists():
        return {}
    if root.is_file():
        return {"": hashlib.sha256(root.read_bytes()).hexdigest()}
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*")) if p.is_file()
    }


def temp_files(root: Path) -> list[str]:
    """Leftovers of interrupted writes: *.tmp / *.part files and staging folders."""
    root = Path(root)
    if not root.is_dir():
        return []
    return sorted(
        p.relative_to(root).as_posix() for p in root.rglob("*")
        if p.name.endswith(TEMP_MARKERS) or p.name.startswith(".extract-")
    )


def assert_intact(before: dict[str, str], root: Path, may_change: tuple[str, ...] = ()) -> None:
    """Every file present before is byte-identical (except `may_change`); no temp files."""
    after = snapshot(root)
    lost = sorted(k for k in before if k not in after)
    changed = sorted(k for k in before if k in after and after[k] != before[k] and k not in may_change)
    assert not lost, f"files lost in {root}: {lost}"
    assert not changed, f"files changed in {root}: {changed}"
    assert not temp_files(root), f"temp files left in {root}: {temp_files(root)}"


# -- audio ------------------------------------------------------------------------------------
def tone(sr: int, seconds: float = 1.0, amp: float = 0.5, freqs=(440.0, 1250.0)) -> np.ndarray:
    t = np.arange(int(round(sr * seconds))) / sr
    y = sum(np.sin(2 * np.pi * f * t) / (i + 1) for i, f in enumerate(freqs))
    return (amp * y / np.max(np.abs(y))).astype(np.float32)


def write_wav(path: Path, y: np.ndarray, sr: int, subtype: str = "PCM_16") -> Path:
    import soundfile as sf

    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), y, sr, subtype=subtype, format="WAV")
    return path


# -- tiny HiFi-GAN ------------------------------------------------------------------------------
TINY_HIFIGAN = {
    "resblock": "2", "upsample_rates": [8, 8, 4], "upsample_kernel_sizes": [16, 16, 8],
    "upsample_initial_channel": 16, "resblock_kernel_sizes": [3], "resblock_dilation_sizes": [[1, 2]],
    "num_mels": TINY_NUM_MELS, "n_fft": 1024, "hop_size": 256, "win_size": 1024,
    "sampling_rate": 16000, "fmin": 0, "fmax": 8000, "segment_size": 4096,
}


def make_hifigan(folder: Path, step: int = 10, **overrides) -> Path:
    """An official-layout vocoder folder: config.json + g_XXXXXXXX ({'generator': ...})."""
    import json

    import torch

    from hifigan.env import AttrDict
    from hifigan.models import Generator
    from hifigan.utils import save_checkpoint

    h = AttrDict({**TINY_HIFIGAN, **overrides})
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(h))
    torch.manual_seed(0)
    save_checkpoint(folder / f"g_{step:08d}", {"generator": Generator(h).state_dict()})
    return folder


# -- session fixtures -----------------------------------------------------------------------------
def tiny_mel_config():
    from melcore.mel_config import MelConfig

    return MelConfig(num_mels=TINY_NUM_MELS, sampling_rate=16000, preset="16k")


@pytest.fixture(scope="session")
def tiny_melset(tmp_path_factory) -> Path:
    """A prepared mel set: train 4 clips, valid 2, test 1 (16 mels, 20-50 frames)."""
    from tiny_mels import make_melset

    return make_melset(tmp_path_factory.mktemp("hardening") / "mels", num_mels=TINY_NUM_MELS,
                       config=tiny_mel_config())


@pytest.fixture(scope="session")
def tiny_run(tiny_melset, tmp_path_factory) -> Path:
    """A tiny run (checkpoints at steps 2 and 4) made by a real mel_train.py process."""
    run = tmp_path_factory.mktemp("hardening") / "run"
    r = run_script("mel_train.py", "--data_dir", tiny_melset, "--log_dir", run,
                   "--max_steps", TINY_STEPS, *TINY_TRAIN_FLAGS, subprocess_=True)
    assert r.code == 0, r.err
    return run


def copy_run(run: Path, dest: Path) -> Path:
    shutil.copytree(run, dest)
    return dest


def needs(*scripts: str):
    """Skip until the scripts exist (they land on other branches during the merge window)."""
    missing = [s for s in scripts if not (SCRIPTS / s).is_file()]
    return pytest.mark.skipif(bool(missing), reason=f"not merged yet: {missing}")


# -- bad mel files ------------------------------------------------------------------------------
def bad_mels(num_mels: int) -> dict[str, tuple[object, str]]:
    """name -> (array or raw bytes, word the error must contain)."""
    good = np.full((num_mels, 24), -4.0, np.float32)
    nan, inf = good.copy(), good.copy()
    nan[3, 5] = np.nan
    inf[1, 2] = np.inf
    return {
        "int_dtype": (good.astype(np.int32), "dtype"),
        "wrong_bins": (np.full((num_mels // 2, 24), -4.0, np.float32), "shape"),
        "three_dims": (good[None], "shape"),
        "nan": (nan, "nan"),
        "inf": (inf, "inf"),
        "empty": (np.zeros((num_mels, 0), np.float32), "empty"),
        "zero_bytes": (b"", "unreadable"),
        "pickled_object": (np.array([{"a": 1}], dtype=object), "unreadable"),
    }


def write_bad_mel(path: Path, value) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(value, bytes):
        path.write_bytes(value)
    else:
        np.save(path, value, allow_pickle=True)
