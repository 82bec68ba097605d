import json

import pytest
import torch
from test_mel_sample import run_cli
from tiny_mels import make_melset, tiny_config, tiny_train_args

from evaluation.pipeline import train_from_args
from improved_diffusion.checkpoint import load_model
from improved_diffusion.evaluate import batch_losses, melset_windows, split_losses
from melcore.melset import MelSet


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("nll")
    mels = make_melset(root / "mels")
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    train_from_args(tiny_train_args(mels, root / "run", max_steps=3, save_interval=3), progress=False)
    torch.set_num_threads(old)
    return mels, root / "run"


def test_windows_and_losses_are_deterministic(trained):
    mels, run = trained
    loaded = load_model(run / "model000003.pt", {"timestep_respacing": ""})
    valid = MelSet(mels, "valid")
    x = melset_windows(valid, 16)
    assert x.shape == (2, 1, 16, 16) and x.min() >= -1 and x.max() <= 1
    cfg = tiny_config()
    torch.testing.assert_close(x[1, 0, :, :5], torch.from_numpy(cfg.normalize(valid.load(1)[:, :5])).clamp(-1, 1))
    a = batch_losses(loaded.model, loaded.diffusion, x, seed=3, timesteps_per_clip=8)
    b = batch_losses(loaded.model, loaded.diffusion, x, seed=3, timesteps_per_clip=8)
    assert a == b
    # each quartile gets 2 of the 8 stratified timesteps per clip; the mean is their mean
    assert a["loss"] == pytest.approx(sum(a[f"loss_q{q}"] for q in range(4)) / 4, rel=1e-5)
    assert a["loss"] == a["mse"]


def test_split_losses_bpd(trained):
    mels, run = trained
    loaded = load_model(run / "ema_0.9999_000003.pt", {"timestep_respacing": ""})
    out = split_losses(loaded.model, loaded.diffusion, MelSet(mels, "test"), 16, bpd=True)
    assert out["num_clips"] == 1 and out["bpd_clips"] == 1
    # total bits/dim = prior + sum of the per-step terms, all positive
    assert out["bpd"] == pytest.approx(out["prior_bpd"] + out["vb_terms_bpd"], rel=1e-5)
    assert 0 < out["prior_bpd"] < 0.01 and out["bpd"] > 0.5


def test_cli_writes_json(trained, tmp_path, monkeypatch, capsys):
    mels, run = trained
    out = tmp_path / "nll.json"
    code, _, err = run_cli("mel_nll", ["--model_path", run / "ema_0.9999_000003.pt", "--data_dir", mels,
                                       "--split", "train,valid", "--num_samples", 2, "--out", out], monkeypatch, capsys)
    assert code == 0, err
    result = json.loads(out.read_text())
    assert set(result["splits"]) == {"train", "valid"} and result["step"] == 3
    assert result["splits"]["valid"]["num_clips"] == 2 and result["diffusion_steps"] == 20
    code, _, err = run_cli("mel_nll", ["--model_path", run / "ema_0.9999_000003.pt", "--data_dir", mels,
                                       "--split", "dev"], monkeypatch, capsys)
    assert code == 2 and "--split 'dev'" in err
