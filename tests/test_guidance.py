import json

import numpy as np
import pytest
import torch
from tiny_mels import make_melset, run_cli, tiny_train_args, train_tiny_run

from evaluation.pipeline import sample_from_checkpoint, train_from_args
from improved_diffusion.guidance import GuidedModel, guide_mismatch
from improved_diffusion.samplers import run_sampler
from improved_diffusion.script_util import create_gaussian_diffusion

pytestmark = pytest.mark.usefixtures("one_torch_thread")


class Affine(torch.nn.Module):
    """A stand-in UNet: out = a * x + b (per output channel), counting its calls."""

    def __init__(self, a, b, out_channels=1, multiples=(8, 8)):
        super().__init__()
        self.a, self.b = torch.nn.Parameter(torch.tensor(float(a))), float(b)
        self.out_channels, self.size_multiples, self.calls = out_channels, multiples, 0

    def forward(self, x, t, **kwargs):
        self.calls += 1
        return torch.cat([self.a * x + self.b + k for k in range(self.out_channels)], dim=1)


def test_mix_is_bad_plus_weight_times_difference():
    x, t = torch.randn(2, 1, 4, 6), torch.tensor([3, 7])
    good, bad = Affine(0.5, 1.0), Affine(0.2, -1.0)
    out = GuidedModel(good, bad, 2.5)(x, t)
    expected = (0.2 * x - 1.0) + 2.5 * ((0.5 * x + 1.0) - (0.2 * x - 1.0))
    torch.testing.assert_close(out, expected)


def test_weight_one_is_the_model_alone_and_never_runs_the_guide():
    good, bad = Affine(0.5, 1.0), Affine(0.2, -1.0)
    x, t = torch.randn(2, 1, 4, 6), torch.tensor([3, 7])
    torch.testing.assert_close(GuidedModel(good, bad, 1.0)(x, t), good(x, t))
    assert bad.calls == 0


def test_learned_variance_channel_comes_from_the_model():
    good, bad = Affine(0.5, 1.0, out_channels=2), Affine(0.2, -1.0, out_channels=2)
    x, t = torch.randn(2, 1, 4, 6), torch.tensor([3, 7])
    out = GuidedModel(good, bad, 3.0)(x, t)
    assert out.shape == (2, 2, 4, 6)
    torch.testing.assert_close(out[:, 1:], good(x, t)[:, 1:])
    torch.testing.assert_close(out[:, :1], bad(x, t)[:, :1] + 3.0 * (good(x, t)[:, :1] - bad(x, t)[:, :1]))


def test_size_multiples_and_bad_weights():
    g = GuidedModel(Affine(1, 0, multiples=(2, 4)), Affine(1, 0, multiples=(4, 6)), 2.0)
    assert g.size_multiples == (4, 12)
    for w in (0.5, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="guidance weight"):
            GuidedModel(Affine(1, 0), Affine(1, 0), w)


@pytest.mark.parametrize("sampler", ["ddim", "dpmpp2m"])
def test_a_guide_equal_to_the_model_changes_nothing(sampler):
    # D_bad + w (D - D_bad) = D when the two agree, whatever w: every sampler sees the model.
    diffusion = create_gaussian_diffusion(steps=100, noise_schedule="cosine", predict_v=True)
    model = Affine(0.3, 0.1)
    noise = torch.randn(3, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    plain = run_sampler(sampler, model, diffusion, noise.shape, noise.clone(), steps=10)
    guided = run_sampler(sampler, GuidedModel(model, model, 4.0), diffusion, noise.shape, noise.clone(), steps=10)
    torch.testing.assert_close(guided, plain)
    # and a guide that differs moves the samples, further for a larger weight
    other = Affine(0.1, -0.2)
    d2 = run_sampler(sampler, GuidedModel(model, other, 2.0), diffusion, noise.shape, noise.clone(), steps=10)
    d3 = run_sampler(sampler, GuidedModel(model, other, 3.0), diffusion, noise.shape, noise.clone(), steps=10)
    assert 0 < (d2 - plain).abs().mean() < (d3 - plain).abs().mean()


def test_mismatch_lines_name_each_differing_flag():
    a = {"diffusion_steps": 1000, "predict_v": True, "noise_schedule": "cosine", "num_channels": 32}
    assert guide_mismatch(a, {**a, "num_channels": 64}) == []  # the architecture may differ
    assert guide_mismatch(a, {**a, "predict_v": False, "diffusion_steps": 50}) == [
        "diffusion_steps: 1000 vs 50",
        "predict_v: True vs False",
    ]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("guide")
    train_tiny_run(root, "run", max_steps=4, save_interval=2, ema_rate="0.5")
    train_tiny_run(root, "v", max_steps=2, save_interval=2, ema_rate="0.5", predict_v=True)
    return root


def test_sampling_with_an_earlier_checkpoint_as_guide(runs, tmp_path):
    run = runs / "run"
    kw = dict(batch_size=2, wav=False, progress=False, sampler="dpmpp2m", steps=5)
    plain, _ = sample_from_checkpoint(run / "ema_0.5_000004.pt", tmp_path / "a", 2, **kw)
    same, _ = sample_from_checkpoint(run / "ema_0.5_000004.pt", tmp_path / "b", 2, guide_path=run, guidance=3.0, **kw)
    np.testing.assert_allclose(same, plain, atol=1e-5)  # the run dir's latest EMA is the model itself
    guided, notes = sample_from_checkpoint(
        run / "ema_0.5_000004.pt", tmp_path / "c", 2, guide_path=run / "ema_0.5_000002.pt", guidance=2.0, **kw
    )
    assert np.abs(guided - plain).max() > 1e-3
    info = json.loads((tmp_path / "c" / "sample_info.json").read_text())
    assert info["guide"].endswith("ema_0.5_000002.pt")
    assert (info["guide_step"], info["guidance"], info["guidance_interval"]) == (2, 2.0, 0.7)
    assert "autoguidance 2 below 0.7 of the schedule by" in notes[0] and notes[0].endswith("(step 2))")


def test_guide_flag_errors(runs, tmp_path, monkeypatch, capsys):
    run = runs / "run"
    base = ["--model_path", run, "--num_samples", 1, "--wav", "False", "--steps", 2]
    code, _, err = run_cli("mel_sample", [*base, "--out_dir", tmp_path / "a", "--guide_model_path", runs / "v"],
                           monkeypatch, capsys)
    assert code == 2 and "not the same diffusion" in err and "predict_v: False vs True" in err
    code, _, err = run_cli("mel_sample", [*base, "--out_dir", tmp_path / "b", "--guidance", 2], monkeypatch, capsys)
    assert code == 2 and "--guidance 2 needs --guide_model_path" in err
    code, _, err = run_cli("mel_sample", [*base, "--out_dir", tmp_path / "c", "--guide_model_path", run,
                                          "--guidance", 0.5], monkeypatch, capsys)
    assert code == 2 and "--guidance 0.5: must be a number >= 1" in err
    code, _, err = run_cli("mel_sample", [*base, "--out_dir", tmp_path / "f", "--guide_model_path", run,
                                          "--guidance_interval", 0], monkeypatch, capsys)
    assert code == 2 and "--guidance_interval 0.0: must lie in (0, 1]" in err
    code, _, err = run_cli("mel_sample", [*base, "--out_dir", tmp_path / "d", "--guide_model_path",
                                          tmp_path / "missing"], monkeypatch, capsys)
    assert code == 2 and "missing" in err
    # the default weight with a guide, recorded
    code, _, err = run_cli("mel_sample", [*base, "--out_dir", tmp_path / "e", "--guide_model_path",
                                          run / "ema_0.5_000002.pt"], monkeypatch, capsys)
    assert code == 0, err
    assert json.loads((tmp_path / "e" / "sample_info.json").read_text())["guidance"] == 2.0


def test_interval_guides_only_the_low_noise_steps():
    good, bad = Affine(0.5, 1.0), Affine(0.2, -1.0)
    x = torch.randn(3, 1, 4, 6)
    t = torch.tensor([100.0, 700.0, 701.0])
    out = GuidedModel(good, bad, 2.0, max_timestep=700.0)(x, t)
    mixed = bad(x, t) + 2.0 * (good(x, t) - bad(x, t))
    torch.testing.assert_close(out[:2], mixed[:2])
    torch.testing.assert_close(out[2:], good(x, t)[2:])
    bad.calls = 0
    GuidedModel(good, bad, 2.0, max_timestep=50.0)(x, t)  # every step above: the guide is not run
    assert bad.calls == 0


def test_max_model_timestep_in_the_models_units():
    from improved_diffusion.guidance import max_model_timestep

    rescaled = create_gaussian_diffusion(steps=200, rescale_timesteps=True, timestep_respacing="20")
    plain = create_gaussian_diffusion(steps=200)
    assert max_model_timestep(rescaled, 0.7) == pytest.approx(700.0)  # 0..1000 whatever the steps
    assert max_model_timestep(plain, 0.7) == pytest.approx(140.0)
    assert max_model_timestep(plain, 1.0) == float("inf")


def test_keep_steps_saves_and_keeps_an_early_checkpoint(tmp_path):
    # The demo's guide: --keep_steps saves that step whatever --save_interval says and
    # --keep_checkpoints never prunes it.
    from improved_diffusion.checkpoint import parse_steps
    from melcore.errors import UserError

    mels = make_melset(tmp_path / "mels")
    args = tiny_train_args(mels, tmp_path / "run", max_steps=6, save_interval=4, keep_checkpoints=1,
                           keep_steps="3", ema_rate="0.5")
    train_from_args(args, progress=False)
    names = sorted(p.name for p in (tmp_path / "run").glob("*.pt"))
    assert names == ["ema_0.5_000003.pt", "ema_0.5_000006.pt", "model000003.pt", "model000006.pt",
                     "opt000003.pt", "opt000006.pt"]  # step 4 saved then pruned; 3 kept
    assert json.loads((tmp_path / "run" / "args.json").read_text())["keep_steps"] == "3"
    assert parse_steps("400, 800") == {400, 800} and parse_steps("") == frozenset()
    for bad in ("x", "0", "-4"):
        with pytest.raises(UserError, match="--keep_steps"):
            parse_steps(bad)


def test_sampling_mode_keeps_the_checkpoints_attention_kernel():
    from improved_diffusion import fast

    good, bad = Affine(1, 0), Affine(1, 0)
    good.attention_impl = "einsum"
    assert fast.prepare_for_sampling(GuidedModel(good, bad, 2.0), "cpu").attention_impl == "einsum"
