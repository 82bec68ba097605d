"""DPM-Solver++(2M) and the sampler entry point: on an exactly known case (Gaussian data,
whose denoiser and probability-flow ODE have closed forms), against k-diffusion's
`sample_dpmpp_2m` on the same model and noise, and through mel_sample.py."""

import importlib.util
import json
import math
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch
from tiny_mels import make_melset, run_cli, tiny_train_args

from improved_diffusion import gaussian_diffusion as gd
from improved_diffusion.samplers import (
    VPDenoiser,
    base_diffusion,
    dynamic_threshold,
    respaced,
    run_sampler,
    sample_dpmpp_2m,
)
from improved_diffusion.script_util import create_gaussian_diffusion, create_model

pytestmark = pytest.mark.usefixtures("one_torch_thread")

ROOT = Path(__file__).resolve().parents[1]
MU, S = 0.3, 0.5  # the data: every element x0 ~ N(MU, S^2), independently


def diffusion_for(
    steps=1000,
    schedule="linear",
    predict_xstart=False,
    learn_sigma=False,
    rescale=True,
    respacing="",
):
    return create_gaussian_diffusion(
        steps=steps,
        noise_schedule=schedule,
        predict_xstart=predict_xstart,
        learn_sigma=learn_sigma,
        rescale_timesteps=rescale,
        timestep_respacing=respacing,
    )


class GaussianModel:
    """The exact model for Gaussian data: at x_t = a x0 + b eps (a^2 = abar_t, b^2 = 1 - abar_t),
    E[x0 | x_t] = MU + a S^2 / (a^2 S^2 + b^2) (x_t - a MU); outputs what `diffusion`'s model
    predicts (eps, x0 or the posterior mean of x_{t-1}), plus junk variance channels when learned."""

    def __init__(self, diffusion, mean_type=None):
        self.base = base_diffusion(diffusion)
        self.mean_type = mean_type or self.base.model_mean_type
        self.calls = []

    def __call__(self, x, t, **kwargs):
        d = self.base
        self.calls.append(t.clone())
        idx = (
            (t.double() * d.num_timesteps / 1000).round().long()
            if d.rescale_timesteps
            else t.long()
        )
        abar = torch.from_numpy(d.alphas_cumprod)[idx].to(x.dtype).view(-1, 1, 1, 1)
        a, b = abar.sqrt(), (1 - abar).sqrt()
        x0 = MU + a * S**2 / (a**2 * S**2 + b**2) * (x - a * MU)
        if self.mean_type == gd.ModelMeanType.EPSILON:
            out = (x - a * x0) / b
        elif self.mean_type == gd.ModelMeanType.START_X:
            out = x0
        else:
            out, _, _ = d.q_posterior_mean_variance(x0, x, idx)
        if d.model_var_type in (gd.ModelVarType.LEARNED, gd.ModelVarType.LEARNED_RANGE):
            out = torch.cat([out, torch.full_like(out, 0.7)], dim=1)
        return out


def standard_noise(shape, seed=0):
    """N(0, 1) draws shifted and scaled to mean exactly 0 and std exactly 1."""
    z = torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return ((z - z.mean()) / z.std()).float()


def exact_flow(noise, denoiser):
    """The probability-flow ODE for Gaussian data, solved exactly from x_T (noise) at the top
    table sigma down to the bottom one, then the last denoise to x0 (the discrete schedule's
    floor, which every sampler shares): (x - MU) / sqrt(S^2 + sigma^2) is constant on the ODE."""
    s_max, s_min = float(denoiser.sigmas[-1]), float(denoiser.sigmas[0])
    x = noise.double() * math.sqrt(1 + s_max**2)
    x = MU + (x - MU) * math.sqrt(S**2 + s_min**2) / math.sqrt(S**2 + s_max**2)
    return (MU + S**2 / (S**2 + s_min**2) * (x - MU)).float()


# ------------------------------------------------------------------ the known case


@pytest.mark.parametrize("schedule", ["linear", "cosine"])
def test_dpmpp2m_samples_the_gaussian(schedule):
    diffusion = diffusion_for(schedule=schedule)
    model = GaussianModel(diffusion)
    shape = (16, 1, 16, 16)  # 4096 elements
    noise = standard_noise(shape)
    x = run_sampler("dpmpp2m", model, diffusion, shape, noise, steps=25, x0_mode="none")
    assert len(model.calls) == 25
    assert abs(x.mean().item() - MU) < 2e-3 and abs(x.std().item() - S) < 1e-2
    ref = exact_flow(noise, VPDenoiser(model, diffusion))
    assert (x - ref).abs().max() < 0.03


def test_dpmpp2m_is_second_order_and_converges():
    diffusion = diffusion_for()
    model = GaussianModel(diffusion)
    shape = (4, 1, 8, 8)
    noise = standard_noise(shape, seed=1)
    ref = exact_flow(noise, VPDenoiser(model, diffusion))

    def err(x):
        return (x - ref).abs().max().item()

    out = {
        n: run_sampler("dpmpp2m", model, diffusion, shape, noise, steps=n, x0_mode="none")
        for n in (20, 40, 50, 200)
    }
    ddim = {
        n: run_sampler("ddim", model, diffusion, shape, noise, steps=n, x0_mode="none")
        for n in (20, 40, 1000)
    }
    # twice the steps, a quarter of the error (DDIM, first order: half)
    assert err(out[20]) / err(out[40]) > 3.0 and 1.5 < err(ddim[20]) / err(ddim[40]) < 2.7
    assert err(out[20]) < err(ddim[20]) / 5
    # the ODE solution: more steps agree, and DDIM at every step reaches it too
    assert err(out[200]) < 1e-3 and (out[50] - out[200]).abs().max() < 1e-2
    assert (ddim[1000] - out[200]).abs().max() < 1e-2
    # evenly spaced timesteps end in steps whose ratio r ~ 0.2: the multistep term overshoots
    time_spaced = run_sampler(
        "dpmpp2m", model, diffusion, shape, noise, steps=20, x0_mode="none", spacing="time"
    )
    assert err(time_spaced) > 0.2 > 5 * err(out[20])


def test_dpmpp2m_sde_samples_the_gaussian():
    """The SDE form draws the data distribution too, though not along the ODE's path; a
    negative eta is refused."""
    diffusion = diffusion_for(schedule="cosine")
    model = GaussianModel(diffusion)
    shape = (16, 1, 16, 16)
    noise = standard_noise(shape, seed=2)
    torch.manual_seed(0)
    x = run_sampler("dpmpp2m_sde", model, diffusion, shape, noise, steps=50, x0_mode="none")
    assert len(model.calls) == 50
    assert abs(x.mean().item() - MU) < 0.03 and abs(x.std().item() - S) < 0.03
    ode = run_sampler("dpmpp2m", model, diffusion, shape, noise, steps=50, x0_mode="none")
    assert (x - ode).abs().mean() > 0.1  # fresh noise each step: a different sample
    den = VPDenoiser(model, diffusion)
    with pytest.raises(ValueError, match="eta"):
        sample_dpmpp_2m(den, noise, den.get_sigmas(4), eta=-0.5)


@pytest.mark.parametrize("rescale", [True, False])
def test_denoiser_gives_x0_for_every_parameterisation(rescale):
    sigmas = None
    preds = {}
    for name, kw in {
        "eps": {},
        "x0": {"predict_xstart": True},
        "learned sigma": {"learn_sigma": True},
        "xprev": {},
    }.items():
        # respaced, so the base process must be recovered
        diffusion = diffusion_for(steps=500, rescale=rescale, respacing="ddim10", **kw)
        model = GaussianModel(diffusion, gd.ModelMeanType.PREVIOUS_X if name == "xprev" else None)
        if name == "xprev":
            diffusion.model_mean_type = gd.ModelMeanType.PREVIOUS_X
        den = VPDenoiser(model, diffusion, x0_mode="none")
        sigmas = den.get_sigmas(7)[:-1]
        x = standard_noise((3, 1, 4, 4), seed=2)
        preds[name] = torch.stack(
            [den(x * math.sqrt(1 + s**2), s * torch.ones(3)) for s in sigmas.tolist()]
        )
        ts = torch.stack(model.calls)
        expect = torch.tensor(den.timesteps(7)).repeat_interleave(3).view(7, 3).double()
        # the model sees base timesteps, scaled as in training
        np.testing.assert_allclose(ts.double(), expect * 1000 / 500 if rescale else expect)
    for name in ("x0", "learned sigma"):
        # float32 rounding of x ~ 100 at the top
        np.testing.assert_allclose(preds[name], preds["eps"], rtol=0, atol=1e-4)
    # inverting the x_{t-1} mean divides by a small coefficient at high noise
    np.testing.assert_allclose(preds["xprev"], preds["eps"], rtol=0, atol=2e-3)


def test_timesteps_and_sigmas_come_from_the_table():
    diffusion = diffusion_for(respacing="ddim50")
    den = VPDenoiser(GaussianModel(diffusion), diffusion)
    assert den.timesteps(5, "time") == [999, 749, 500, 250, 0] and den.timesteps(1) == [999]
    ts = den.timesteps(5)
    sig = den.get_sigmas(5)
    abar = base_diffusion(diffusion).alphas_cumprod
    np.testing.assert_allclose(sig[:-1].numpy(), np.sqrt((1 - abar) / abar)[ts])
    assert sig[-1] == 0 and den.sigma_to_t(sig[:-1].float()).tolist() == ts
    for schedule in ("linear", "cosine"):
        den = VPDenoiser(None, diffusion_for(schedule=schedule))
        for steps in (2, 10, 20, 100, 1000):
            ts = den.timesteps(steps)
            assert ts[0] == 999 and ts[-1] == 0 and len(ts) == steps
            assert all(a > b for a, b in zip(ts, ts[1:]))
        h = -np.diff(den.log_sigmas.numpy()[den.timesteps(20)])
        # even in log sigma (the first step may be longer)
        assert h[1:].max() / h[1:].min() < 2.5, h
    with pytest.raises(ValueError, match="steps"):
        den.timesteps(1001)
    with pytest.raises(ValueError, match="spacing"):
        den.timesteps(10, "karras")


def test_respaced_input_gives_the_same_samples():
    shape = (2, 1, 4, 4)
    noise = standard_noise(shape, seed=3)
    for name in ("ddim", "dpmpp2m"):
        a = run_sampler(
            name, GaussianModel(diffusion_for()), diffusion_for(), shape, noise, steps=10
        )
        b = run_sampler(
            name,
            GaussianModel(diffusion_for()),
            diffusion_for(respacing="250"),
            shape,
            noise,
            steps=10,
        )
        np.testing.assert_array_equal(a, b)
    # "ddim" takes upstream's integer stride; "ancestral" the even spacing
    assert sorted(respaced(diffusion_for(), "ddim10").timestep_map) == list(range(0, 1000, 100))


def test_x0_modes():
    x = torch.stack([torch.linspace(-0.5, 0.5, 200), torch.linspace(0, 3, 200)]).view(2, 1, 10, 20)
    y = dynamic_threshold(x, 0.995)
    np.testing.assert_array_equal(y[0], x[0])  # the quantile is below 1: untouched
    s = torch.quantile(x[1].flatten().abs(), 0.995)
    np.testing.assert_allclose(y[1], x[1].clamp(-s, s) / s, rtol=1e-6)
    assert y[1].max() == 1 and y[1].min() == 0
    # every mode runs in every sampler; clip and dynamic keep x0 in [-1, 1]
    diffusion = diffusion_for(steps=50, schedule="cosine")
    shape = (2, 1, 8, 8)
    noise = 2 * standard_noise(shape)
    for name in ("ddim", "dpmpp2m", "ancestral"):
        outs = {}
        for mode in ("clip", "dynamic", "none"):
            torch.manual_seed(0)
            outs[mode] = run_sampler(
                name, GaussianModel(diffusion), diffusion, shape, noise, steps=8, x0_mode=mode
            )
            assert torch.isfinite(outs[mode]).all()
        assert outs["clip"].abs().max() <= 1 and outs["dynamic"].abs().max() <= 1
        assert outs["none"].abs().max() > 1.2  # Gaussian data reaches beyond [-1, 1]
    with pytest.raises(ValueError, match="x0_mode"):
        run_sampler("dpmpp2m", GaussianModel(diffusion), diffusion, shape, noise, x0_mode="soft")
    with pytest.raises(ValueError, match="sampler"):
        run_sampler("euler", GaussianModel(diffusion), diffusion, shape, noise)


def test_solver_rejects_bad_sigmas():
    x = torch.zeros(1, 1, 2, 2)
    for sigmas in ([1.0], [1.0, 2.0], [1.0, -1.0], [0.0, 0.0]):
        with pytest.raises(ValueError, match="sigmas"):
            sample_dpmpp_2m(lambda x, s: x, x, sigmas)


# ------------------------------------------------------------------ against k-diffusion


@pytest.fixture(scope="module")
def k_diffusion():
    """k-diffusion's sampling.py and external.py (requirements-nodeps.txt, test-only). Its
    package __init__ imports torchvision, clip, kornia, ...; these two modules need only
    `utils.append_dims` from it, so they are loaded under a stub package."""
    spec = importlib.util.find_spec("k_diffusion")
    if spec is None or spec.submodule_search_locations is None:
        pytest.skip(
            "k-diffusion is not installed (make install puts it in from requirements-nodeps.txt)"
        )
    for dep in ("torchsde", "torchdiffeq", "scipy"):
        if importlib.util.find_spec(dep) is None:
            pytest.skip(f"k_diffusion/sampling.py needs {dep}, which is not installed")
    folder = Path(list(spec.submodule_search_locations)[0])
    names = ["k_diffusion", "k_diffusion.utils", "k_diffusion.sampling", "k_diffusion.external"]
    saved = {n: sys.modules.get(n) for n in names}
    pkg = types.ModuleType("k_diffusion")
    pkg.__path__ = [str(folder)]
    utils = types.ModuleType("k_diffusion.utils")
    utils.append_dims = lambda x, n: x[(...,) + (None,) * (n - x.ndim)]
    pkg.utils = utils
    sys.modules.update({"k_diffusion": pkg, "k_diffusion.utils": utils})
    loaded = {}
    try:
        for name in ("sampling", "external"):
            mod_spec = importlib.util.spec_from_file_location(
                f"k_diffusion.{name}", folder / f"{name}.py"
            )
            mod = importlib.util.module_from_spec(mod_spec)
            sys.modules[f"k_diffusion.{name}"] = mod
            setattr(pkg, name, mod)
            mod_spec.loader.exec_module(mod)
            loaded[name] = mod
    finally:
        for n, m in saved.items():
            if m is None:
                sys.modules.pop(n, None)
            else:
                sys.modules[n] = m
    return types.SimpleNamespace(**loaded)


def random_unet(learn_sigma=False, seed=0):
    """A tiny UNet whose output layer is not zero (upstream zero-initialises it)."""
    torch.manual_seed(seed)
    model = create_model(
        image_size=64,
        num_channels=32,
        num_res_blocks=1,
        learn_sigma=learn_sigma,
        class_cond=False,
        use_checkpoint=False,
        attention_resolutions="",
        num_heads=1,
        num_heads_upsample=-1,
        use_scale_shift_norm=True,
        dropout=0.0,
        channel_mult="1,2",
    )
    for p in model.out.parameters():
        torch.nn.init.normal_(p, std=0.2)
    return model.eval()


@pytest.mark.parametrize("steps", [2, 10, 25])
def test_solver_matches_k_diffusion(k_diffusion, steps):
    diffusion = diffusion_for()
    den = VPDenoiser(random_unet(), diffusion, x0_mode="clip")
    sigmas = den.get_sigmas(steps)
    x = torch.randn(2, 1, 16, 16, generator=torch.Generator().manual_seed(4)) * float(sigmas[0])
    seen = []
    ours = sample_dpmpp_2m(den, x, sigmas, callback=lambda d: seen.append(d["i"]))
    theirs = k_diffusion.sampling.sample_dpmpp_2m(den, x, sigmas, disable=True)
    assert seen == list(range(steps))
    np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-5)
    assert ours.std() > 0.1


@pytest.mark.parametrize("eta", [0.5, 1.0])
def test_sde_solver_matches_k_diffusion(k_diffusion, eta):
    """eta > 0 against k-diffusion's sample_dpmpp_2m_sde (midpoint), given the same draws."""
    diffusion = diffusion_for()
    den = VPDenoiser(random_unet(seed=2), diffusion, x0_mode="clip")
    sigmas = den.get_sigmas(12)
    x = torch.randn(2, 1, 16, 16, generator=torch.Generator().manual_seed(6)) * float(sigmas[0])
    draws = torch.randn(len(sigmas), *x.shape, generator=torch.Generator().manual_seed(7))

    def replay():
        calls = iter(range(len(draws)))
        return lambda sigma, sigma_next: draws[next(calls)]

    ours = sample_dpmpp_2m(den, x, sigmas, eta=eta, noise_sampler=replay())
    theirs = k_diffusion.sampling.sample_dpmpp_2m_sde(
        den, x, sigmas, eta=eta, noise_sampler=replay(), disable=True
    )
    np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-5)
    assert (ours - sample_dpmpp_2m(den, x, sigmas)).abs().mean() > 0.01


@pytest.mark.parametrize("schedule,steps", [("linear", 12), ("cosine", 8)])
def test_run_sampler_matches_k_diffusion_discrete_eps_denoiser(k_diffusion, schedule, steps):
    """The whole path: our VP wrapper + solver against k-diffusion's DiscreteEpsDDPMDenoiser
    (quantized to the table) + its solver, on the same UNet, sigmas and noise. The two scale x
    (~150 at the top of the linear schedule) by sqrt(abar) from upstream's float32 table vs a
    computed 1 / sqrt(sigma^2 + 1), so they differ by float32 rounding (measured 1.7e-5)."""
    diffusion = diffusion_for(steps=1000 if schedule == "linear" else 50, schedule=schedule)
    unet = random_unet(seed=1)
    T = diffusion.original_num_steps
    theirs_den = k_diffusion.external.DiscreteEpsDDPMDenoiser(
        lambda x, t: unet(x, t.float() * 1000.0 / T),
        torch.from_numpy(diffusion.base_betas).neg().add(1).cumprod(0),
        True,
    )
    sigmas = VPDenoiser(unet, diffusion).get_sigmas(steps)
    noise = torch.randn(2, 1, 16, 16, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        ours = run_sampler(
            "dpmpp2m", unet, diffusion, noise.shape, noise, steps=steps, x0_mode="none"
        )
        theirs = k_diffusion.sampling.sample_dpmpp_2m(
            theirs_den, noise * math.sqrt(1 + float(sigmas[0]) ** 2), sigmas, disable=True
        )
    np.testing.assert_allclose(ours, theirs, rtol=5e-5, atol=5e-5)
    assert ours.std() > 0.1


# ------------------------------------------------------------------ mel_sample.py and sample_mels


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    from evaluation.pipeline import train_from_args

    root = tmp_path_factory.mktemp("samplers")
    mels = make_melset(root / "mels")
    train_from_args(
        tiny_train_args(mels, root / "run", max_steps=4, save_interval=4, ema_rate="0.5"),
        progress=False,
    )
    return root / "run"


def test_cli_sampler_flags(run_dir, tmp_path, monkeypatch, capsys):
    out = tmp_path / "s"
    code, stdout, err = run_cli(
        "mel_sample",
        [
            "--model_path",
            run_dir,
            "--out_dir",
            out,
            "--num_samples",
            3,
            "--batch_size",
            2,
            "--sampler",
            "dpmpp2m",
            "--steps",
            10,
            "--x0",
            "dynamic",
            "--wav",
            "False",
        ],
        monkeypatch,
        capsys,
    )
    assert code == 0, err
    arr = np.load(out / "samples_3x1x16x50.npz")["arr_0"]  # whole clips (50 frames)
    assert arr.shape == (3, 1, 16, 50) and np.isfinite(arr).all() and arr.std() > 0.05
    info = json.loads((out / "sample_info.json").read_text())
    assert (info["sampler"], info["steps"], info["x0"]) == ("dpmpp2m", 10, "dynamic")
    assert "dpmpp2m, 10 steps" in stdout
    for argv, msg in (
        (["--sampler", "foo"], "--sampler"),
        (["--x0", "soft"], "--x0"),
        (["--sampler", "dpmpp2m", "--steps", 0], "--steps 0"),
        (["--sampler", "ddim", "--steps", 21], "--steps 21"),  # the tiny model has 20 steps
        (["--use_ddim", "True", "--steps", 10], "--timestep_respacing/--use_ddim"),
        (["--sampler", "ddim", "--timestep_respacing", "ddim5"], "--timestep_respacing"),
    ):
        code, _, err = run_cli(
            "mel_sample",
            ["--model_path", run_dir, "--out_dir", tmp_path / "e", *argv], monkeypatch, capsys
        )
        assert code == 2 and msg in err and err.count("\n") == 1 and err.startswith("error:"), (
            argv,
            err,
        )


def test_sample_mels_sampler_matches_the_legacy_path(run_dir):
    """--sampler ddim/ancestral --steps 5 gives exactly what ddim5/"5" respacing gave."""
    from improved_diffusion.checkpoint import load_model
    from improved_diffusion.sampling import sample_mels

    kw = dict(batch_size=2, seed=3, progress=False)
    for respacing, use_ddim, sampler in (("ddim5", True, "ddim"), ("5", False, "ancestral")):
        loaded = load_model(run_dir / "ema_0.5_000004.pt", {"timestep_respacing": respacing})
        legacy = sample_mels(
            loaded.model, loaded.diffusion, 3, (1, 16, 16), use_ddim=use_ddim, **kw
        )
        # whatever respacing the loaded diffusion carries
        other = load_model(run_dir / "ema_0.5_000004.pt", {"timestep_respacing": "ddim10"})
        new = sample_mels(
            other.model, other.diffusion, 3, (1, 16, 16), sampler=sampler, steps=5, **kw
        )
        np.testing.assert_array_equal(legacy, new)
    x = sample_mels(other.model, other.diffusion, 3, (1, 16, 16), sampler="dpmpp2m", steps=5, **kw)
    y = sample_mels(other.model, other.diffusion, 3, (1, 16, 16), sampler="dpmpp2m", steps=5, **kw)
    np.testing.assert_array_equal(x, y)
    assert x.shape == (3, 1, 16, 16) and np.abs(x - new).max() > 0
    # the SDE form draws fresh noise each step, from the generator the seed sets: same seed, same samples
    sde = [sample_mels(other.model, other.diffusion, 3, (1, 16, 16), sampler="dpmpp2m_sde", steps=5, **kw)
           for _ in range(2)]
    np.testing.assert_array_equal(*sde)
    assert np.abs(sde[0] - x).max() > 0
