"""Broken, foreign and contradicted checkpoints: one line naming the file, nothing overwritten.

Diffusion checkpoints (mel_sample.py, mel_nll.py, mel_train.py resume) and HiFi-GAN
checkpoints in the official layout (vocode.py).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from hardening_fixtures import (
    TINY_NUM_MELS,
    TINY_STEPS,
    TINY_TRAIN_FLAGS,
    assert_intact,
    assert_user_error,
    copy_run,
    make_hifigan,
    needs,
    run_script,
    snapshot,
    tiny_mel_config,
)


def sample(run_or_file: Path, out: Path, *extra, subprocess_: bool = False):
    return run_script("mel_sample.py", "--model_path", run_or_file, "--num_samples", 2,
                      "--batch_size", 2, "--out_dir", out, "--wav", "False", *extra, subprocess_=subprocess_)


def truncate(path: Path, keep: float = 0.5) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


def old_samples(out: Path) -> dict[str, str]:
    out.mkdir(parents=True, exist_ok=True)
    np.save(out / "sample_00000.npy", np.zeros((TINY_NUM_MELS, 16), np.float32))
    (out / "notes.txt").write_text("from an earlier run\n")
    return snapshot(out)


# -- diffusion checkpoints ---------------------------------------------------------------------------
@needs("mel_sample.py", "mel_train.py")
@pytest.mark.parametrize("which", ["model", "ema"])
def test_sample_truncated_checkpoint(tiny_run, tmp_path, which):
    run = copy_run(tiny_run, tmp_path / "run")
    name = f"model{TINY_STEPS:06d}.pt" if which == "model" else f"ema_0.9999_{TINY_STEPS:06d}.pt"
    truncate(run / name)
    out = tmp_path / "samples"
    before = old_samples(out)
    r = sample(run / name, out)
    assert_user_error(r, name)
    assert_intact(before, out)


@needs("mel_sample.py", "mel_train.py")
def test_sample_truncated_checkpoint_in_a_real_process(tiny_run, tmp_path):
    run = copy_run(tiny_run, tmp_path / "run")
    name = f"ema_0.9999_{TINY_STEPS:06d}.pt"
    truncate(run / name, 0.3)
    out = tmp_path / "samples"
    before = old_samples(out)
    r = sample(run, out, subprocess_=True)
    assert_user_error(r, name)
    assert r.code == 2
    assert_intact(before, out)


@needs("mel_sample.py", "mel_train.py")
def test_sample_not_a_checkpoint_at_all(tiny_run, tmp_path):
    run = copy_run(tiny_run, tmp_path / "run")
    name = f"model{TINY_STEPS:06d}.pt"
    (run / name).write_bytes(b"<html>404 not found</html>\n")
    r = sample(run / name, tmp_path / "samples")
    assert_user_error(r, name)


@needs("mel_sample.py", "mel_train.py")
def test_sample_weights_of_another_architecture(tiny_run, tmp_path):
    """args.json says 32 channels; the weights come from a 64-channel model."""
    from improved_diffusion.script_util import (
        create_model_and_diffusion,
        model_and_diffusion_defaults,
    )

    run = copy_run(tiny_run, tmp_path / "run")
    args = json.loads((run / "args.json").read_text())
    flags = {k: args[k] for k in model_and_diffusion_defaults()}
    flags["num_channels"] = 64
    model, _ = create_model_and_diffusion(**flags)
    name = f"model{TINY_STEPS:06d}.pt"
    torch.save(model.state_dict(), run / name)
    r = sample(run / name, tmp_path / "samples")
    assert_user_error(r, name)


@needs("mel_sample.py", "mel_train.py")
def test_sample_hifigan_checkpoint_given_as_diffusion_model(tiny_run, tmp_path):
    run = copy_run(tiny_run, tmp_path / "run")
    voc = make_hifigan(tmp_path / "voc")
    name = f"model{TINY_STEPS:06d}.pt"
    (run / name).write_bytes((voc / "g_00000010").read_bytes())
    r = sample(run / name, tmp_path / "samples")
    assert_user_error(r, name)


@needs("mel_sample.py", "mel_train.py")
def test_sample_without_args_json(tiny_run, tmp_path):
    run = copy_run(tiny_run, tmp_path / "run")
    (run / "args.json").unlink()
    r = sample(run / f"model{TINY_STEPS:06d}.pt", tmp_path / "samples")
    assert_user_error(r, "args.json")


@needs("mel_sample.py", "mel_train.py")
def test_sample_flag_contradicts_args_json(tiny_run, tmp_path):
    r = sample(tiny_run, tmp_path / "samples", "--num_channels", 64)
    line = assert_user_error(r, "--num_channels")
    assert "64" in line and "32" in line


@needs("mel_train.py")
def test_train_resume_flag_contradicts_args_json(tiny_run, tmp_path):
    run = copy_run(tiny_run, tmp_path / "run")
    before = snapshot(run)
    r = run_script("mel_train.py", "--data_dir", json.loads((run / "args.json").read_text())["data_dir"],
                   "--log_dir", run, "--max_steps", 8, *TINY_TRAIN_FLAGS, "--diffusion_steps", "20")
    line = assert_user_error(r, "--diffusion_steps")
    assert "20" in line and "10" in line
    assert_intact(before, run)


@needs("mel_train.py")
def test_train_resume_from_truncated_latest_checkpoint(tiny_run, tmp_path):
    """The newest model file is damaged: a clear error naming it, and the older steps stay."""
    run = copy_run(tiny_run, tmp_path / "run")
    truncate(run / f"model{TINY_STEPS:06d}.pt")
    before = snapshot(run)
    data = json.loads((run / "args.json").read_text())["data_dir"]
    r = run_script("mel_train.py", "--data_dir", data, "--log_dir", run, "--max_steps", 8, *TINY_TRAIN_FLAGS)
    assert_user_error(r, f"model{TINY_STEPS:06d}.pt")
    assert_intact(before, run, may_change=("log.txt", "progress.csv"))


# -- HiFi-GAN checkpoints (official layout) ------------------------------------------------------
def mels_for_vocoder(root: Path) -> Path:
    root.mkdir(parents=True)
    np.save(root / "a.npy", np.full((TINY_NUM_MELS, 12), -4.0, np.float32))
    tiny_mel_config().save(root / "mel_config.json")
    return root


def vocode(src: Path, out: Path, checkpoint: Path, subprocess_: bool = False):
    return run_script("vocode.py", "--input_dir", src, "--output_dir", out, "--checkpoint", checkpoint,
                      subprocess_=subprocess_)


def test_vocoder_config_that_does_not_fit_the_weights(tmp_path):
    voc = make_hifigan(tmp_path / "voc")
    h = json.loads((voc / "config.json").read_text())
    h["upsample_initial_channel"] = 32
    (voc / "config.json").write_text(json.dumps(h))
    out = tmp_path / "wav"
    out.mkdir()
    (out / "keep.wav").write_bytes(b"earlier")
    before = snapshot(out)
    r = vocode(mels_for_vocoder(tmp_path / "mels"), out, voc, subprocess_=True)
    assert_user_error(r, "g_00000010", "config")
    assert r.code == 2
    assert_intact(before, out)


def test_vocoder_config_with_another_resblock_type(tmp_path):
    voc = make_hifigan(tmp_path / "voc")
    h = json.loads((voc / "config.json").read_text())
    h["resblock"] = "1"
    h["resblock_dilation_sizes"] = [[1, 3, 5]]
    (voc / "config.json").write_text(json.dumps(h))
    r = vocode(mels_for_vocoder(tmp_path / "mels"), tmp_path / "wav", voc)
    assert_user_error(r, "g_00000010")


def test_vocoder_config_whose_upsampling_is_not_the_hop(tmp_path):
    voc = make_hifigan(tmp_path / "voc")
    h = json.loads((voc / "config.json").read_text())
    h["upsample_rates"] = [8, 8, 2]
    (voc / "config.json").write_text(json.dumps(h))
    r = vocode(mels_for_vocoder(tmp_path / "mels"), tmp_path / "wav", voc)
    assert_user_error(r, "config.json", "hop_size")


@pytest.mark.parametrize("damage", ["truncated", "empty", "text"])
def test_vocoder_damaged_generator_file(tmp_path, damage):
    voc = make_hifigan(tmp_path / "voc")
    g = voc / "g_00000010"
    if damage == "truncated":
        truncate(g)
    else:
        g.write_bytes(b"" if damage == "empty" else b"not a checkpoint\n")
    r = vocode(mels_for_vocoder(tmp_path / "mels"), tmp_path / "wav", voc)
    assert_user_error(r, "g_00000010")


def test_vocoder_checkpoint_without_generator_entry(tmp_path):
    voc = make_hifigan(tmp_path / "voc")
    torch.save({"mpd": {}, "steps": 3}, voc / "g_00000010")
    r = vocode(mels_for_vocoder(tmp_path / "mels"), tmp_path / "wav", voc)
    assert_user_error(r, "g_00000010", "generator")


def test_vocoder_without_config_json(tmp_path):
    voc = make_hifigan(tmp_path / "voc")
    (voc / "config.json").unlink()
    r = vocode(mels_for_vocoder(tmp_path / "mels"), tmp_path / "wav", voc / "g_00000010")
    assert_user_error(r, "config.json")


def test_vocoder_config_not_json(tmp_path):
    voc = make_hifigan(tmp_path / "voc")
    (voc / "config.json").write_text("{resblock: 1,")
    r = vocode(mels_for_vocoder(tmp_path / "mels"), tmp_path / "wav", voc)
    assert_user_error(r, "config.json")


def test_vocoder_config_lacking_fields(tmp_path):
    voc = make_hifigan(tmp_path / "voc")
    h = json.loads((voc / "config.json").read_text())
    del h["upsample_kernel_sizes"]
    (voc / "config.json").write_text(json.dumps(h))
    r = vocode(mels_for_vocoder(tmp_path / "mels"), tmp_path / "wav", voc)
    assert_user_error(r, "config.json", "upsample_kernel_sizes")
