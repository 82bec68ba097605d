"""Bad flags and unusable output folders: one `error: --flag: problem; fix` line, exit non-zero,
and whatever was in the output folder before stays byte-identical (no temp files left).

Includes a full disk: training runs in this process with melcore.atomic's writer raising
ENOSPC half-way through a checkpoint file; the previous checkpoint stays usable and a rerun
resumes from it.
"""

from __future__ import annotations

import errno
from pathlib import Path

import numpy as np
import pytest
from hardening_fixtures import (
    TINY_NUM_MELS,
    TINY_TRAIN_FLAGS,
    assert_intact,
    assert_user_error,
    make_hifigan,
    needs,
    run_script,
    snapshot,
    tiny_mel_config,
    tone,
    write_wav,
)

# A path nobody can create folders in, even root: /proc refuses mkdir.
UNWRITABLE = Path("/proc/hardening-no-such-dir/out")


def _flag_value(flags: list[str], name: str, value: str) -> list[str]:
    """`flags` with --name set to value (replaced when present, appended otherwise)."""
    flags = list(flags)
    if name in flags:
        flags[flags.index(name) + 1] = value
    else:
        flags += [name, value]
    return flags


# -- prep_mels.py ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def wav_dir(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("flags") / "wavs"
    write_wav(d / "a.wav", tone(16000), 16000)
    return d


def prep(wav_dir: Path, out: Path, *extra):
    return run_script("prep_mels.py", "--input", wav_dir, "--output", out, "--workers", 1, "--quiet",
                      "--preset", "16k", *extra)


@pytest.mark.parametrize("flags,needle", [
    (["--preset", "bogus"], "--preset"),
    (["--pack_dtype", "int8"], "--pack_dtype"),
    (["--workers", "two"], "--workers"),
    (["--window_s", "0"], "--window_s"),
    (["--hop_s", "-1"], "--hop_s"),
])
def test_prep_bad_flag(wav_dir, tmp_path, flags, needle):
    out = tmp_path / "mels"
    out.mkdir()
    (out / "keep.txt").write_text("earlier")
    before = snapshot(out)
    r = prep(wav_dir, out, *flags)
    assert_user_error(r, needle)
    assert_intact(before, out)


def test_prep_missing_input(tmp_path):
    r = prep(tmp_path / "nope", tmp_path / "mels")
    assert_user_error(r, "--input", "nope")


def test_prep_output_is_a_file(wav_dir, tmp_path):
    out = tmp_path / "mels"
    out.write_text("precious")
    r = prep(wav_dir, out)
    assert_user_error(r, str(out))
    assert out.read_text() == "precious"


def test_prep_output_not_writable(wav_dir):
    r = prep(wav_dir, UNWRITABLE)
    assert_user_error(r, str(UNWRITABLE.parent))


# -- mel_train.py ----------------------------------------------------------------------------------
def train(data: Path, log_dir: Path, flags: list[str], steps: int = 2):
    return run_script("mel_train.py", "--data_dir", data, "--log_dir", log_dir, "--max_steps", steps, *flags)


TRAIN_CASES = [
    (("--batch_size", "0"), "--batch_size"),
    (("--crop_width", "1000"), "--crop_width"),
    (("--crop_width", "0"), "--crop_width"),
    (("--precision", "fp8"), "--precision"),
    (("--channel_mult", "1,x"), "--channel_mult"),
    (("--schedule_sampler", "bogus"), "--schedule_sampler"),
    (("--noise_schedule", "bogus"), "--noise_schedule"),
    (("--num_channels", "20"), "--num_channels"),
    # 10 steps of the linear schedule (rescaled by 1000/steps) would need betas above 1.
    (("--noise_schedule", "linear"), "--diffusion_steps"),
    (("--ema_rate", "fast"), "--ema_rate"),
    (("--num_mels", "80"), "--num_mels"),
    (("--use_fp16", "maybe"), "--use_fp16"),
]


@needs("mel_train.py")
@pytest.mark.parametrize("change,needle", TRAIN_CASES, ids=[f"{c[0]}={c[1]}" for c, _ in TRAIN_CASES])
def test_train_bad_flag(tiny_melset, tmp_path, change, needle):
    log_dir = tmp_path / "run"
    r = train(tiny_melset, log_dir, _flag_value(TINY_TRAIN_FLAGS, *change))
    assert_user_error(r, needle)
    assert not list(log_dir.glob("*.pt"))


@needs("mel_train.py")
def test_train_log_dir_is_a_file(tiny_melset, tmp_path):
    log_dir = tmp_path / "run"
    log_dir.write_text("precious")
    r = train(tiny_melset, log_dir, TINY_TRAIN_FLAGS)
    assert_user_error(r, str(log_dir))
    assert log_dir.read_text() == "precious"


@needs("mel_train.py")
def test_train_log_dir_not_writable(tiny_melset):
    r = train(tiny_melset, UNWRITABLE, TINY_TRAIN_FLAGS)
    assert_user_error(r, str(UNWRITABLE.parent))


# -- disk full during a checkpoint ---------------------------------------------------------------------
@needs("mel_train.py")
def test_disk_full_mid_checkpoint_keeps_the_previous_one(tiny_melset, tiny_run, tmp_path, monkeypatch):
    """The tiny run resumed from step 2; writing the step-4 checkpoint meets a full disk half-way
    through its first file. One line, step 2 untouched, no temp file; a rerun then finishes."""
    import shutil

    import melcore.atomic as atomic
    from improved_diffusion import checkpoint as ckpt

    run = tmp_path / "run"
    shutil.copytree(tiny_run, run, ignore=shutil.ignore_patterns("*000004.pt"))
    before = snapshot(run)
    real_write_bytes = atomic.write_bytes

    def full_disk(path, data, fsync=True):
        if "000004" in Path(path).name:
            # Half the bytes reach the temp file, then the disk is full.
            with atomic.atomic_open(path, "wb") as f:
                f.write(data[: len(data) // 2])
                raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return real_write_bytes(path, data, fsync)

    monkeypatch.setattr(atomic, "write_bytes", full_disk)
    r = train(tiny_melset, run, TINY_TRAIN_FLAGS, steps=4)
    line = assert_user_error(r, "no space left")
    assert "000004" in line
    assert ckpt.find_latest(run, [0.9999]) == 2
    assert not list(run.glob("*000004.pt"))
    assert_intact(before, run, may_change=("args.json", "log.txt", "progress.csv"))

    monkeypatch.setattr(atomic, "write_bytes", real_write_bytes)
    r = train(tiny_melset, run, TINY_TRAIN_FLAGS, steps=4)
    assert r.code == 0, r.err
    assert f"resuming from {run / ckpt.model_name(2)}" in (run / "log.txt").read_text()
    assert ckpt.find_latest(run, [0.9999]) == 4
    assert_intact(before, run, may_change=("args.json", "log.txt", "progress.csv"))


# -- mel_sample.py ----------------------------------------------------------------------------------
def sample(run: Path, out: Path, *extra):
    return run_script("mel_sample.py", "--model_path", run, "--out_dir", out, "--num_samples", 1,
                      "--batch_size", 1, "--wav", "False", *extra)


@needs("mel_sample.py", "mel_train.py")
@pytest.mark.parametrize("extra,needle", [
    (("--num_samples", "0"), "--num_samples"),
    (("--batch_size", "0"), "--batch_size"),
    (("--timestep_respacing", "ddim7x"), "--timestep_respacing"),
    (("--use_ddim", "maybe"), "--use_ddim"),
])
def test_sample_bad_flag(tiny_run, tmp_path, extra, needle):
    out = tmp_path / "s"
    out.mkdir()
    (out / "keep.npy").write_bytes(b"earlier")
    before = snapshot(out)
    r = sample(tiny_run, out, *extra)
    assert_user_error(r, needle)
    assert_intact(before, out)


@needs("mel_sample.py", "mel_train.py")
def test_sample_out_dir_is_a_file(tiny_run, tmp_path):
    out = tmp_path / "s"
    out.write_text("precious")
    r = sample(tiny_run, out)
    assert_user_error(r, str(out))
    assert out.read_text() == "precious"


# -- vocode.py -------------------------------------------------------------------------------------------
@pytest.fixture
def mel_folder(tmp_path) -> Path:
    d = tmp_path / "mels"
    d.mkdir()
    np.save(d / "a.npy", np.full((TINY_NUM_MELS, 12), -4.0, np.float32))
    tiny_mel_config().save(d / "mel_config.json")
    return d


@pytest.mark.parametrize("extra,needle", [
    (("--batch_size", "0"), "--batch_size"),
    (("--out_rate", "0"), "--out_rate"),
    (("--out_rate", "-16000"), "--out_rate"),
    (("--out_rate", "fast"), "--out_rate"),
])
def test_vocode_bad_flag(mel_folder, tmp_path, extra, needle):
    out = tmp_path / "wav"
    out.mkdir()
    (out / "keep.wav").write_bytes(b"earlier")
    before = snapshot(out)
    r = run_script("vocode.py", "--input_dir", mel_folder, "--output_dir", out, "--griffin_lim", *extra)
    assert_user_error(r, needle)
    assert_intact(before, out)


def test_vocode_unknown_device(mel_folder, tmp_path):
    voc = make_hifigan(tmp_path / "voc")
    r = run_script("vocode.py", "--input_dir", mel_folder, "--output_dir", tmp_path / "wav",
                   "--checkpoint", voc, "--device", "tpu9")
    assert_user_error(r, "--device")


def test_vocode_output_dir_is_a_file(mel_folder, tmp_path):
    out = tmp_path / "wav"
    out.write_text("precious")
    r = run_script("vocode.py", "--input_dir", mel_folder, "--output_dir", out, "--griffin_lim",
                   subprocess_=True)
    assert_user_error(r, str(out))
    assert out.read_text() == "precious"


def test_vocode_output_dir_not_writable(mel_folder):
    r = run_script("vocode.py", "--input_dir", mel_folder, "--output_dir", UNWRITABLE, "--griffin_lim")
    assert_user_error(r, str(UNWRITABLE.parent))

