"""Bad mel files and mel sets: every step that reads mels stops with one line naming the file.

Covered readers: vocode.py (melcore.mel_io), mel_train.py (melcore.melset through the data
loader, also inside loader worker processes), mel_nll.py; configs that differ between a set and
a model or vocoder are refused with both values shown. Outputs already there stay intact.
"""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import numpy as np
import pytest
from hardening_fixtures import (
    TINY_NUM_MELS,
    TINY_TRAIN_FLAGS,
    assert_intact,
    assert_user_error,
    bad_mels,
    copy_run,
    make_hifigan,
    needs,
    run_script,
    snapshot,
    tiny_mel_config,
    write_bad_mel,
)

BAD = bad_mels(TINY_NUM_MELS)
# Written by every mel_train.py start (logs, and args.json with this run's --data_dir).
RUN_LOGS = ("args.json", "log.txt", "progress.csv")


def mel_dir(root: Path, bad: str | None = None, with_config: bool = True) -> Path:
    """A folder to vocode: good.npy (+ <bad>.npy) + mel_config.json."""
    root.mkdir(parents=True, exist_ok=True)
    np.save(root / "good.npy", np.full((TINY_NUM_MELS, 24), -4.0, np.float32))
    if bad is not None:
        write_bad_mel(root / f"{bad}.npy", BAD[bad][0])
    if with_config:
        tiny_mel_config().save(root / "mel_config.json")
    return root


def old_outputs(out: Path) -> dict[str, str]:
    """An output folder from an earlier run; returns its snapshot."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "old.wav").write_bytes(b"RIFF-earlier-run")
    (out / "vocoder.json").write_text('{"earlier": true}\n')
    return snapshot(out)


# -- vocode.py ------------------------------------------------------------------------------------
@pytest.mark.parametrize("bad", sorted(BAD))
def test_vocode_bad_mel_file(tmp_path, bad):
    src, out = mel_dir(tmp_path / "mels", bad), tmp_path / "wav"
    before = old_outputs(out)
    r = run_script("vocode.py", "--input_dir", src, "--output_dir", out, "--griffin_lim")
    assert_user_error(r, f"{bad}.npy", BAD[bad][1])
    assert_intact(before, out)


def test_vocode_bad_mel_in_a_real_process(tmp_path):
    src, out = mel_dir(tmp_path / "mels", "nan"), tmp_path / "wav"
    before = old_outputs(out)
    r = run_script("vocode.py", "--input_dir", src, "--output_dir", out, "--griffin_lim",
                   subprocess_=True)
    assert_user_error(r, "nan.npy", "nan")
    assert r.code == 2
    assert_intact(before, out)


def test_vocode_bad_npz_batch(tmp_path):
    src, out = mel_dir(tmp_path / "mels"), tmp_path / "wav"
    batch = np.zeros((2, 1, TINY_NUM_MELS, 16), np.float32)
    batch[1, 0, 3, 3] = np.nan
    np.savez(src / "samples.npz", batch)
    before = old_outputs(out)
    r = run_script("vocode.py", "--input_dir", src, "--output_dir", out, "--griffin_lim")
    assert_user_error(r, "samples.npz", "nan")
    assert_intact(before, out)


def test_vocode_without_mel_config(tmp_path):
    src, out = mel_dir(tmp_path / "mels", with_config=False), tmp_path / "wav"
    before = old_outputs(out)
    r = run_script("vocode.py", "--input_dir", src, "--output_dir", out, "--griffin_lim")
    assert_user_error(r, "mel_config.json")
    assert_intact(before, out)


def test_vocode_vocoder_with_another_mel_config(tmp_path):
    """A vocoder analysed at 22.05 kHz for mels made at 16 kHz: refused, both rates shown."""
    src, out = mel_dir(tmp_path / "mels"), tmp_path / "wav"
    voc = make_hifigan(tmp_path / "voc", sampling_rate=22050)
    before = old_outputs(out)
    r = run_script("vocode.py", "--input_dir", src, "--output_dir", out, "--checkpoint", voc)
    line = assert_user_error(r, "sampling_rate")
    assert "16000" in line and "22050" in line
    assert_intact(before, out)


# -- mel sets for training / NLL --------------------------------------------------------------------
def broken_set(tiny_melset: Path, dest: Path, bad: str | None = None, drop: str | None = None,
               **config_changes) -> Path:
    """A copy of the tiny set with one train mel replaced, a file removed or the config changed."""
    shutil.copytree(tiny_melset, dest)
    if bad is not None:
        path = dest / "train" / "train_000.npy"
        path.unlink()
        write_bad_mel(path, BAD[bad][0])
    if drop is not None:
        (dest / drop).unlink()
    if config_changes:
        config = dataclasses.replace(tiny_mel_config(), **config_changes)
        config.save(dest / "mel_config.json")
    return dest


def train(data: Path, log_dir: Path, *extra, steps: int = 2, subprocess_: bool = False):
    return run_script("mel_train.py", "--data_dir", data, "--log_dir", log_dir, "--max_steps", steps,
                      *TINY_TRAIN_FLAGS, *extra, subprocess_=subprocess_)




@needs("mel_train.py")
# melcore.melset shares melcore.mel_io.check_mel with vocode.py (every kind is tested there;
# NaN in training is the loader-worker test below).
@pytest.mark.parametrize("bad", ["int_dtype", "zero_bytes"])
def test_train_bad_mel_file(tiny_melset, tiny_run, tmp_path, bad):
    """Resuming a run on a set with one broken train mel: one line naming it, run intact.

    The file is met mid-run, so args.json records the new --data_dir; checkpoints stay."""
    data = broken_set(tiny_melset, tmp_path / "mels", bad=bad)
    run = copy_run(tiny_run, tmp_path / "run")
    before = snapshot(run)
    r = train(data, run, steps=8)
    assert_user_error(r, "train_000.npy", BAD[bad][1])
    assert_intact(before, run, may_change=RUN_LOGS)


@needs("mel_train.py")
def test_train_bad_mel_read_by_a_loader_worker(tiny_melset, tmp_path):
    """The same error when a DataLoader worker process meets the file (no worker traceback)."""
    data = broken_set(tiny_melset, tmp_path / "mels", bad="nan")
    r = train(data, tmp_path / "run", "--num_workers", "1", subprocess_=True)
    assert_user_error(r, "train_000.npy", "nan")
    assert r.code == 2


@needs("mel_train.py")
@pytest.mark.parametrize("drop", ["mel_config.json", "manifest.jsonl"])
def test_train_set_without_metadata(tiny_melset, tmp_path, drop):
    data = broken_set(tiny_melset, tmp_path / "mels", drop=drop)
    r = train(data, tmp_path / "run")
    assert_user_error(r, drop)


@needs("mel_train.py")
def test_train_resume_on_a_set_with_another_config(tiny_melset, tiny_run, tmp_path):
    data = broken_set(tiny_melset, tmp_path / "mels", fmax=7000.0)
    run = copy_run(tiny_run, tmp_path / "run")
    before = snapshot(run)
    r = train(data, run, steps=8)
    line = assert_user_error(r, "fmax")
    assert "7000" in line and "8000" in line
    assert_intact(before, run)


def nll(run: Path, data: Path, out: Path):
    return run_script("mel_nll.py", "--model_path", run, "--data_dir", data, "--split", "test",
                      "--num_samples", 1, "--bpd", "False", "--out", out)


@needs("mel_nll.py")
def test_nll_on_a_set_with_another_config(tiny_melset, tiny_run, tmp_path):
    data = broken_set(tiny_melset, tmp_path / "mels", mel_min=-11.0)
    r = nll(tiny_run, data, tmp_path / "nll.json")
    line = assert_user_error(r, "mel_min")
    assert "-11" in line and "-12" in line


@needs("mel_nll.py")
def test_nll_on_a_bad_mel(tiny_melset, tiny_run, tmp_path):
    data = tmp_path / "mels"
    shutil.copytree(tiny_melset, data)
    path = data / "test" / "test_000.npy"
    path.unlink()
    write_bad_mel(path, BAD["inf"][0])
    r = nll(tiny_run, data, tmp_path / "nll.json")
    assert_user_error(r, "test_000.npy", "inf")
