"""GaussianDiffusion and respacing against closed-form Gaussian formulas and upstream's RNG order."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch as th

from improved_diffusion import gaussian_diffusion as gd
from improved_diffusion.respace import SpacedDiffusion, space_timesteps

MEANS = list(gd.ModelMeanType)
VARS = list(gd.ModelVarType)
LOSSES = list(gd.LossType)


def make(
    T: int = 20,
    mean: gd.ModelMeanType = gd.ModelMeanType.EPSILON,
    var: gd.ModelVarType = gd.ModelVarType.FIXED_LARGE,
    loss: gd.LossType = gd.LossType.MSE,
    schedule: str = "cosine",  # valid for any T (linear needs T >= 20)
    rescale: bool = False,
) -> gd.GaussianDiffusion:
    return gd.GaussianDiffusion(
        betas=gd.get_named_beta_schedule(schedule, T),
        model_mean_type=mean,
        model_var_type=var,
        loss_type=loss,
        rescale_timesteps=rescale,
    )


class ToyModel(th.nn.Module):
    """Deterministic, parameterised: mean channels a * x, variance channels tanh(b * x)."""

    def __init__(self, learned_var: bool) -> None:
        super().__init__()
        self.learned_var = learned_var
        self.a = th.nn.Parameter(th.tensor(0.5))
        self.b = th.nn.Parameter(th.tensor(0.3))
        self.calls: list[th.Tensor] = []

    def forward(self, x: th.Tensor, t: th.Tensor) -> th.Tensor:
        self.calls.append(t.detach().clone())
        out = self.a * x
        if self.learned_var:
            out = th.cat([out, th.tanh(self.b * x)], dim=1)
        return out


# ------------------------------------------------------------------ schedules


def test_linear_schedule_endpoints_scale_with_steps():
    for T in (1000, 100, 4000):
        betas = gd.get_named_beta_schedule("linear", T)
        assert betas.dtype == np.float64 and betas.shape == (T,)
        assert betas[0] == pytest.approx(1e-4 * 1000 / T, rel=1e-12)
        assert betas[-1] == pytest.approx(0.02 * 1000 / T, rel=1e-12)
        assert np.allclose(np.diff(betas), np.diff(betas)[0], rtol=1e-9)


def test_cosine_schedule_follows_alpha_bar_formula():
    T = 50
    betas = gd.get_named_beta_schedule("cosine", T)
    assert betas.dtype == np.float64

    def f(t):
        return math.cos((t + 0.008) / 1.008 * math.pi / 2) ** 2

    alphas_cumprod = np.cumprod(1 - betas)
    expected = np.array([f((i + 1) / T) / f(0) for i in range(T)])
    # The last beta is capped at 0.999 (alpha_bar(1) = 0); all others follow the formula.
    assert np.allclose(alphas_cumprod[:-1], expected[:-1], rtol=1e-12)
    assert betas[-1] == 0.999
    assert np.all(betas[:-1] < 0.999)


def test_unknown_schedule_raises():
    with pytest.raises(NotImplementedError):
        gd.get_named_beta_schedule("quadratic", 10)


def test_schedule_arrays_are_float64():
    d = make(T=30)
    for name in (
        "alphas_cumprod",
        "alphas_cumprod_prev",
        "posterior_variance",
        "posterior_log_variance_clipped",
        "posterior_mean_coef1",
        "posterior_mean_coef2",
        "sqrt_recipm1_alphas_cumprod",
    ):
        arr = getattr(d, name)
        assert arr.dtype == np.float64 and arr.shape == (30,), name
    assert d.alphas_cumprod_prev[0] == 1.0 and d.alphas_cumprod_next[-1] == 0.0


# ------------------------------------------------------------------ forward process


def test_q_mean_variance_and_q_sample_match_closed_form():
    d = make(T=40)
    x0 = th.linspace(-1, 1, 2 * 3 * 4).reshape(2, 1, 3, 4)
    t = th.tensor([0, 37])
    mean, var, logvar = d.q_mean_variance(x0, t)
    abar = np.cumprod(1 - d.betas)
    for i, ti in enumerate(t.tolist()):
        assert th.allclose(mean[i], math.sqrt(abar[ti]) * x0[i], atol=1e-6)
        assert th.allclose(var[i], th.full_like(var[i], 1 - abar[ti]), rtol=1e-6)
        assert th.allclose(logvar[i], th.full_like(var[i], math.log(1 - abar[ti])), rtol=1e-6)

    noise = th.randn_like(x0)
    xt = d.q_sample(x0, t, noise=noise)
    assert th.allclose(xt, mean + var.sqrt() * noise, atol=1e-6)


def test_q_sample_statistics():
    d = make(T=100)
    th.manual_seed(0)
    x0 = th.full((1, 1, 200, 200), 0.7)
    t = th.tensor([60])
    xt = d.q_sample(x0, t)
    abar = d.alphas_cumprod[60]
    n = xt.numel()
    # 5-sigma bounds for the sample mean and variance of 40,000 draws.
    assert abs(xt.mean().item() - math.sqrt(abar) * 0.7) < 5 * math.sqrt((1 - abar) / n)
    assert abs(xt.var().item() - (1 - abar)) < 5 * (1 - abar) * math.sqrt(2 / n)


def test_posterior_matches_bayes_rule():
    """q(x_{t-1}|x_t,x_0) ∝ N(x_t; sqrt(a_t) x_{t-1}, b_t) N(x_{t-1}; sqrt(abar_{t-1}) x_0, 1-abar_{t-1})."""
    d = make(T=25, schedule="cosine")
    rng = np.random.default_rng(0)
    T = d.num_timesteps
    x0 = rng.uniform(-1, 1, size=(T, 1, 2, 3))
    xt = rng.normal(size=(T, 1, 2, 3))
    t = th.arange(T)
    mean, var, logvar = d.q_posterior_mean_variance(th.tensor(x0).float(), th.tensor(xt).float(), t)
    betas = d.betas
    alphas = 1 - betas
    abar = np.cumprod(alphas)
    abar_prev = np.append(1.0, abar[:-1])
    for i in range(T):
        precision = alphas[i] / betas[i] + 1 / (1 - abar_prev[i]) if i > 0 else np.inf
        if i == 0:
            exp_var, exp_mean = 0.0, x0[i]  # x_{-1} is x_0 itself
        else:
            exp_var = 1 / precision
            exp_mean = exp_var * (
                math.sqrt(alphas[i]) * xt[i] / betas[i]
                + math.sqrt(abar_prev[i]) * x0[i] / (1 - abar_prev[i])
            )
        assert np.allclose(mean[i].double().numpy(), exp_mean, atol=2e-5), i
        assert np.allclose(var[i].double().numpy(), exp_var, rtol=1e-5, atol=1e-12), i
    # The log-variance is clipped at t = 0 to the t = 1 value.
    assert np.allclose(logvar[0].numpy(), math.log(d.posterior_variance[1]), rtol=1e-6)
    assert np.allclose(logvar[5].numpy(), math.log(d.posterior_variance[5]), rtol=1e-6)


# ------------------------------------------------------------------ training losses


@pytest.mark.parametrize("mean,var,loss", list(itertools.product(MEANS, VARS, LOSSES)))
def test_training_losses_every_combination(mean, var, loss):
    T = 30
    d = make(T=T, mean=mean, var=var, loss=loss)
    learned = var in (gd.ModelVarType.LEARNED, gd.ModelVarType.LEARNED_RANGE)
    model = ToyModel(learned)
    th.manual_seed(1)
    x0 = th.rand(3, 1, 4, 4) * 2 - 1
    t = th.tensor([0, 7, T - 1])
    noise = th.randn_like(x0)
    terms = d.training_losses(model, x0, t, noise=noise)

    if loss.is_vb():
        assert set(terms) == {"loss"}
    elif learned:
        assert set(terms) == {"loss", "mse", "vb"}
        assert th.allclose(terms["loss"], terms["mse"] + terms["vb"])
    else:
        assert set(terms) == {"loss", "mse"}
        assert th.equal(terms["loss"], terms["mse"])
    for v in terms.values():
        assert v.shape == (3,) and th.isfinite(v).all()

    if "mse" in terms:
        xt = d.q_sample(x0, t, noise=noise)
        target = {
            gd.ModelMeanType.EPSILON: noise,
            gd.ModelMeanType.START_X: x0,
            gd.ModelMeanType.PREVIOUS_X: d.q_posterior_mean_variance(x0, xt, t)[0],
            gd.ModelMeanType.VELOCITY: d._velocity(x0, t, noise),
        }[mean]
        expected = ((target - 0.5 * xt) ** 2).mean(dim=(1, 2, 3))
        assert th.allclose(terms["mse"], expected, rtol=1e-5, atol=1e-7)

    terms["loss"].sum().backward()
    assert model.a.grad is not None and th.isfinite(model.a.grad)


def test_epsilon_mse_with_known_output():
    d = make(T=10)
    x0 = th.zeros(2, 1, 3, 3)
    noise = th.arange(18, dtype=th.float32).reshape(2, 1, 3, 3) / 10

    def zero_model(x, t):
        return th.zeros_like(x)

    terms = d.training_losses(zero_model, x0, th.tensor([2, 9]), noise=noise)
    assert th.allclose(terms["mse"], (noise**2).mean(dim=(1, 2, 3)))


def test_vb_term_trains_only_the_variance_and_rescales():
    T = 100
    x0 = th.rand(2, 1, 4, 4) * 2 - 1
    t = th.tensor([3, 50])
    noise = th.randn_like(x0)
    out = {}
    for loss in (gd.LossType.MSE, gd.LossType.RESCALED_MSE):
        d = make(T=T, var=gd.ModelVarType.LEARNED_RANGE, loss=loss)
        model = ToyModel(learned_var=True)
        out[loss] = d.training_losses(model, x0, t, noise=noise)
    model = ToyModel(learned_var=True)
    d = make(T=T, var=gd.ModelVarType.LEARNED_RANGE)
    d.training_losses(model, x0, t, noise=noise)["vb"].sum().backward()
    assert model.a.grad is None or model.a.grad == 0  # the mean is detached for the VB term
    assert model.b.grad is not None and model.b.grad != 0
    # RESCALED_MSE scales the VB term by T / 1000.
    assert th.allclose(out[gd.LossType.RESCALED_MSE]["vb"], out[gd.LossType.MSE]["vb"] * T / 1000)


def test_rescaled_kl_is_kl_times_steps():
    T = 12
    x0 = th.rand(2, 1, 3, 3) * 2 - 1
    t = th.tensor([0, 5])
    noise = th.randn_like(x0)
    kl = make(T=T, loss=gd.LossType.KL).training_losses(ToyModel(False), x0, t, noise=noise)
    rkl = make(T=T, loss=gd.LossType.RESCALED_KL).training_losses(
        ToyModel(False), x0, t, noise=noise
    )
    assert th.allclose(rkl["loss"], kl["loss"] * T)


def test_vb_kl_is_zero_for_the_true_posterior_and_prior_is_small():
    d = make(T=50, mean=gd.ModelMeanType.START_X, var=gd.ModelVarType.FIXED_SMALL)
    x0 = th.rand(2, 1, 4, 4) * 2 - 1

    def oracle(x, t):  # predicts x_0 exactly: p(x_{t-1}|x_t) equals q(x_{t-1}|x_t,x_0)
        return x0

    t = th.tensor([10, 49])
    xt = d.q_sample(x0, t)
    out = d._vb_terms_bpd(oracle, x0, xt, t, clip_denoised=False)
    assert th.allclose(out["output"], th.zeros(2), atol=1e-5)
    assert th.allclose(out["pred_xstart"], x0)

    # q(x_T|x_0) is ~N(0, 1) after 1000 linear steps: the prior KL is ~0 bits.
    big = make(T=1000, schedule="linear")
    prior = big._prior_bpd(x0)
    assert prior.shape == (2,) and (prior >= 0).all() and (prior < 1e-4).all()
    # and clearly non-zero when little noise is added
    small = gd.GaussianDiffusion(
        betas=np.full(5, 0.01),
        model_mean_type=gd.ModelMeanType.EPSILON,
        model_var_type=gd.ModelVarType.FIXED_LARGE,
        loss_type=gd.LossType.MSE,
    )
    assert (small._prior_bpd(x0) > 1e-2).all()


def _bpd_case(T: int = 8):
    """A learned-variance toy diffusion, its model and two 4x4 clips, seeded at 3."""
    d = make(T=T, var=gd.ModelVarType.LEARNED_RANGE)
    model = ToyModel(learned_var=True)
    x0 = th.rand(2, 1, 4, 4) * 2 - 1
    th.manual_seed(3)
    return d, model, x0


def test_calc_bpd_loop_keys_sum_and_noise_order():
    T = 8
    d, model, x0 = _bpd_case(T)
    out = d.calc_bpd_loop(model, x0, clip_denoised=True)
    assert set(out) == {"total_bpd", "prior_bpd", "vb", "xstart_mse", "mse"}
    for k in ("vb", "xstart_mse", "mse"):
        assert out[k].shape == (2, T)
    assert th.allclose(out["total_bpd"], out["vb"].sum(dim=1) + out["prior_bpd"])
    assert th.isfinite(out["total_bpd"]).all()

    # Upstream's order: one randn_like per step, from T-1 down to 0; column j is t = T-1-j.
    th.manual_seed(3)
    for j, t in enumerate(range(T - 1, -1, -1)):
        tb = th.tensor([t, t])
        noise = th.randn_like(x0)
        xt = d.q_sample(x0, tb, noise=noise)
        ref = d._vb_terms_bpd(model, x0, xt, tb, clip_denoised=True)
        eps = d._predict_eps_from_xstart(xt, tb, ref["pred_xstart"])
        assert th.allclose(out["vb"][:, j], ref["output"])
        assert th.allclose(out["mse"][:, j], ((eps - noise) ** 2).mean(dim=(1, 2, 3)))


@pytest.mark.parametrize("timestep_batch", [3, 8, 100])
def test_calc_bpd_loop_timestep_batches_give_upstreams_numbers(timestep_batch):
    """Several timesteps per model call (chunks of 3, 3, 2 for T = 8; all at once; more than
    T) draw the same noise in the same order as one step per call: same bound and terms."""
    d, model, x0 = _bpd_case()
    ref = d.calc_bpd_loop(model, x0, clip_denoised=True)
    th.manual_seed(3)
    out = d.calc_bpd_loop(model, x0, clip_denoised=True, timestep_batch=timestep_batch)
    for k in ref:
        assert out[k].shape == ref[k].shape
        assert th.allclose(out[k], ref[k], rtol=1e-5, atol=1e-6), k
    assert not th.allclose(ref["vb"][:, 0], ref["vb"][:, 1])  # columns are distinct steps
    with pytest.raises(ValueError, match="timestep_batch"):
        d.calc_bpd_loop(model, x0, timestep_batch=0)


# ------------------------------------------------------------------ sampling


def gaussian_eps_model(s: float):
    """Exact eps-prediction for data ~ N(0, s^2): E[eps | x_t] = sqrt(1-abar) x_t / (abar s^2 + 1 - abar)."""

    def model(x, t, d):
        abar = th.from_numpy(d.alphas_cumprod).float()[t].view(-1, 1, 1, 1)
        return (1 - abar).sqrt() * x / (abar * s**2 + 1 - abar)

    return model


class CountingRandom:
    def __init__(self, monkeypatch):
        self.randn_like = 0
        self.randn = 0
        real_like, real = th.randn_like, th.randn

        def like(*a, **k):
            self.randn_like += 1
            return real_like(*a, **k)

        def randn(*a, **k):
            self.randn += 1
            return real(*a, **k)

        monkeypatch.setattr(th, "randn_like", like)
        monkeypatch.setattr(th, "randn", randn)


def test_p_sample_loop_seeded_and_in_upstream_noise_order(monkeypatch):
    T = 6
    d = make(T=T, var=gd.ModelVarType.FIXED_SMALL)
    model = ToyModel(False)
    shape = (2, 1, 4, 4)
    th.manual_seed(7)
    a = d.p_sample_loop(model, shape)
    th.manual_seed(7)
    b = d.p_sample_loop(model, shape, progress=True)
    assert th.equal(a, b)

    # by hand: x_T = randn(*shape), then for t = T-1..0: model, then one randn_like.
    th.manual_seed(7)
    x = th.randn(*shape)
    for i in range(T - 1, -1, -1):
        t = th.tensor([i, i])
        out = d.p_mean_variance(model, x, t)
        noise = th.randn_like(x)
        x = out["mean"] + (0.0 if i == 0 else 1.0) * th.exp(0.5 * out["log_variance"]) * noise
    assert th.allclose(a, x, atol=1e-6)

    counter = CountingRandom(monkeypatch)
    d.p_sample_loop(model, shape)
    assert (counter.randn, counter.randn_like) == (1, T)
    d.ddim_sample_loop(model, shape, noise=th.zeros(shape))
    assert (counter.randn, counter.randn_like) == (1, 2 * T)  # DDIM draws too, even at eta=0


def test_progressive_yields_every_step_with_model_timesteps():
    T = 5
    d = make(T=T, rescale=True)
    model = ToyModel(False)
    steps = list(d.p_sample_loop_progressive(model, (1, 1, 2, 2)))
    assert len(steps) == T and all({"sample", "pred_xstart"} == set(s) for s in steps)
    # rescale_timesteps feeds 0..1000-scaled floats, from T-1 down.
    assert [c.tolist() for c in model.calls] == [[i * 1000.0 / T] for i in range(T - 1, -1, -1)]


def ddim_round_trip(T: int, s: float, x0: th.Tensor, eta: float = 0.0, seed: int = 0):
    """Encode x0 with ddim_reverse_sample (t = 0..T-1), decode with ddim_sample_loop."""
    d = make(T=T)
    eps_model = gaussian_eps_model(s)

    def model(x, t):
        return eps_model(x, t, d)

    model.parameters = lambda: iter([th.zeros(1)])  # for the loop's device lookup
    x = x0
    for i in range(T):
        x = d.ddim_reverse_sample(model, x, th.tensor([i] * len(x0)), clip_denoised=False)["sample"]
    th.manual_seed(seed)
    rec = d.ddim_sample_loop(model, x0.shape, noise=x, clip_denoised=False, eta=eta)
    return x, rec


def test_ddim_eta0_is_deterministic_and_inverts():
    s = 0.5
    th.manual_seed(0)
    x0 = th.randn(2, 1, 4, 4) * s
    x_T, rec1 = ddim_round_trip(50, s, x0, seed=0)
    _, rec2 = ddim_round_trip(50, s, x0, seed=123)
    assert th.equal(rec1, rec2)  # no dependence on the RNG at eta = 0
    assert not th.allclose(x_T, x0, atol=0.1)  # the latent really is somewhere else
    # The round trip returns x_0 up to a discretisation error that is first order in 1/T
    # (measured: 0.064 at T=50, 0.017 at T=200).
    err50 = (rec1 - x0).abs().max().item()
    _, rec200 = ddim_round_trip(200, s, x0)
    err200 = (rec200 - x0).abs().max().item()
    assert err200 < 0.025 and err200 < err50 / 3
    # eta > 0 is stochastic.
    _, n1 = ddim_round_trip(20, s, x0, eta=1.0, seed=0)
    _, n2 = ddim_round_trip(20, s, x0, eta=1.0, seed=1)
    assert not th.allclose(n1, n2)


def test_ddim_reverse_needs_eta0():
    d = make(T=10)
    with pytest.raises(ValueError):
        d.ddim_reverse_sample(ToyModel(False), th.zeros(1, 1, 2, 2), th.tensor([0]), eta=0.5)


# ------------------------------------------------------------------ respacing


def test_space_timesteps():
    assert space_timesteps(1000, "ddim50") == set(range(0, 1000, 20))
    assert space_timesteps(20, "3,2") == {0, 4, 9, 10, 19}  # round(4.5) == 4, as upstream
    assert space_timesteps(10, [10]) == set(range(10))
    s = space_timesteps(1000, "10,10")
    assert len(s) == 20 and {0, 499, 500, 999} <= s
    s = space_timesteps(100, "25")
    assert len(s) == 25 and min(s) == 0 and max(s) == 99
    with pytest.raises(ValueError):
        space_timesteps(100, "ddim33")
    with pytest.raises(ValueError):
        space_timesteps(10, "20")


@pytest.mark.parametrize("spacing", ["ddim50", "10,10", "25"])
def test_spaced_diffusion_keeps_alphas_cumprod(spacing):
    base = make(T=1000, schedule="cosine")
    kept = sorted(space_timesteps(1000, spacing))
    sd = SpacedDiffusion(
        use_timesteps=kept,
        betas=base.betas,
        model_mean_type=base.model_mean_type,
        model_var_type=base.model_var_type,
        loss_type=base.loss_type,
        rescale_timesteps=True,
    )
    assert sd.num_timesteps == len(kept) and sd.timestep_map == kept
    assert np.allclose(sd.alphas_cumprod, base.alphas_cumprod[kept], rtol=1e-7, atol=0)

    # The model sees the original timesteps, rescaled to 0..1000.
    model = ToyModel(False)
    idx = th.tensor([0, len(kept) - 1])
    sd.p_mean_variance(model, th.zeros(2, 1, 2, 2), idx)
    assert model.calls[-1].tolist() == [kept[0] * 1.0, kept[-1] * 1.0]
    sd.training_losses(model, th.zeros(2, 1, 2, 2), idx)
    assert model.calls[-1].tolist() == [kept[0] * 1.0, kept[-1] * 1.0]
