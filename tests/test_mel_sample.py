import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from tiny_mels import run_cli, tiny_config, train_tiny_run

from evaluation.pipeline import sample_from_checkpoint
from improved_diffusion.sampling import sample_mels

pytestmark = pytest.mark.usefixtures("one_torch_thread")

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    return train_tiny_run(tmp_path_factory.mktemp("sample"), max_steps=4, save_interval=4, ema_rate="0.5")


def test_cli_outputs(run_dir, tmp_path, monkeypatch, capsys):
    out = tmp_path / "s"
    code, stdout, err = run_cli("mel_sample", ["--model_path", run_dir / "ema_0.5_000004.pt", "--out_dir", out,
                                               "--num_samples", 3, "--batch_size", 2, "--seed", 5], monkeypatch, capsys)
    assert code == 0, err
    # Whole clips by default: the longest training clip of tiny_mels has 50 frames (the
    # model runs on 56, its multiple of 8, and the samples are cut back).
    arr = np.load(out / "samples_3x1x16x50.npz")["arr_0"]
    assert arr.shape == (3, 1, 16, 50) and arr.dtype == np.float32
    assert arr.min() >= -1 and arr.max() <= 1 and arr.std() > 0.05
    config = tiny_config()
    for i in range(3):
        mel = np.load(out / f"sample_{i:05d}.npy")
        assert mel.shape == (16, 50) and mel.dtype == np.float32
        assert config.mel_min - 1e-5 <= mel.min() and mel.max() <= config.mel_max + 1e-5
        np.testing.assert_allclose(mel, config.denormalize(arr[i, 0]), rtol=1e-6, atol=1e-5)
        assert (out / f"sample_{i:05d}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        # the 16-mel test config has no HiFi-GAN: Griffin-Lim, and the file says so
        wav, sr = sf.read(out / f"sample_{i:05d}_griffinlim.wav")
        assert sr == config.sampling_rate and len(wav) == 50 * config.hop_size
    assert json.loads((out / "mel_config.json").read_text()) == config.to_dict()
    info = json.loads((out / "sample_info.json").read_text())
    assert info["timestep_respacing"] == "ddim20" and info["checkpoint"].endswith("ema_0.5_000004.pt")
    # the default sampler, chosen by measurement: DPM-Solver++(2M) SDE, 20 steps (the tiny model's all)
    assert (info["sampler"], info["steps"], info["x0"]) == ("dpmpp2m_sde", 20, "clip")
    assert info["frames"] == 50 and json.loads((run_dir / "args.json").read_text())["clip_frames"] == 50
    assert "Griffin-Lim" in stdout


def test_reproducible_and_ema_choice(run_dir, tmp_path):
    kw = dict(batch_size=2, wav=False, progress=False, overrides={"timestep_respacing": "ddim5"})
    a, _ = sample_from_checkpoint(run_dir / "ema_0.5_000004.pt", tmp_path / "a", 3, seed=1, **kw)
    b, _ = sample_from_checkpoint(run_dir, tmp_path / "b", 3, seed=1, **kw)  # run dir -> latest EMA
    c, _ = sample_from_checkpoint(run_dir / "ema_0.5_000004.pt", tmp_path / "c", 3, seed=2, **kw)
    d, _ = sample_from_checkpoint(run_dir / "ema_0.5_000004.pt", tmp_path / "d", 3, seed=1, use_ema=False, **kw)
    np.testing.assert_array_equal(a, b)
    assert np.abs(a - c).max() > 0.1
    assert np.abs(a - d).max() > 0  # raw weights differ from EMA 0.5
    assert json.loads((tmp_path / "d" / "sample_info.json").read_text())["checkpoint"].endswith("model000004.pt")


def test_sample_mels_batches_match_seeded_noise(run_dir):
    from improved_diffusion.checkpoint import load_model

    loaded = load_model(run_dir / "model000004.pt", {"timestep_respacing": "ddim5"})
    x = sample_mels(loaded.model, loaded.diffusion, 3, (1, 16, 16), batch_size=3, seed=0, progress=False)
    y = sample_mels(loaded.model, loaded.diffusion, 3, (1, 16, 16), batch_size=3, seed=0, progress=False)
    np.testing.assert_array_equal(x, y)
    assert x.shape == (3, 1, 16, 16)


def test_missing_args_json_and_contradicting_flag(run_dir, tmp_path, monkeypatch, capsys):
    lone = tmp_path / "lone"
    lone.mkdir()
    shutil.copy(run_dir / "ema_0.5_000004.pt", lone)
    code, _, err = run_cli("mel_sample", ["--model_path", lone / "ema_0.5_000004.pt", "--out_dir", tmp_path / "o"],
                           monkeypatch, capsys)
    assert code == 2 and "args.json: missing" in err and err.count("\n") == 1
    code, _, err = run_cli("mel_sample", ["--model_path", run_dir / "ema_0.5_000004.pt", "--out_dir", tmp_path / "o",
                                          "--num_channels", 64], monkeypatch, capsys)
    assert code == 2 and "--num_channels 64" in err and "num_channels=32" in err
    # a sampling flag may differ; a model flag equal to the stored one is fine
    code, _, err = run_cli("mel_sample", ["--model_path", run_dir / "ema_0.5_000004.pt", "--out_dir", tmp_path / "o",
                                          "--num_channels", 32, "--timestep_respacing", "ddim4", "--num_samples", 1,
                                          "--wav", "False"], monkeypatch, capsys)
    assert code == 0, err
    assert json.loads((tmp_path / "o" / "sample_info.json").read_text())["timestep_respacing"] == "ddim4"
    # the sampled width may differ from the training crop (the UNet is convolutional in time)
    code, _, err = run_cli("mel_sample", ["--model_path", run_dir, "--out_dir", tmp_path / "w", "--crop_width", 32,
                                          "--timestep_respacing", "ddim4", "--num_samples", 1, "--wav", "False"],
                           monkeypatch, capsys)
    assert code == 0, err
    assert np.load(tmp_path / "w" / "sample_00000.npy").shape == (16, 32)
    # any width: one that is not a multiple of the UNet's 8 is sampled at 32 and cut to 30
    code, _, err = run_cli("mel_sample", ["--model_path", run_dir, "--out_dir", tmp_path / "w30", "--crop_width", 30,
                                          "--timestep_respacing", "ddim4", "--num_samples", 1, "--wav", "False"],
                           monkeypatch, capsys)
    assert code == 0, err
    assert np.load(tmp_path / "w30" / "sample_00000.npy").shape == (16, 30)


def test_flag_errors_are_one_line(run_dir, tmp_path, monkeypatch, capsys):
    for argv, msg in ((["--use_ddim", "maybe"], "--use_ddim"), (["--bogus", "1"], "unrecognized arguments: --bogus"),
                      (["--num_samples", 0], "--num_samples: must be positive")):
        code, _, err = run_cli("mel_sample", ["--model_path", run_dir, "--out_dir", tmp_path, *argv], monkeypatch, capsys)
        assert code == 2 and msg in err and err.count("\n") == 1, err
    code, _, err = run_cli("mel_train", ["--data_dir", run_dir, "--batch_size", "x"], monkeypatch, capsys)
    assert code == 2 and "--batch_size" in err and err.count("\n") == 1, err
