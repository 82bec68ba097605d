"""Samplers for a trained model: DPM-Solver++(2M) beside upstream's DDIM and ancestral loops.

In the k-diffusion style, a solver is a pure function `sample(denoise, x, sigmas, ...)`:
`x` lives in "sigma space" (x = x0 + sigma * eps, the variance-exploding view of the same
process), `sigmas` is a decreasing 1-D tensor that may end in 0, and `denoise(x, sigma,
**extra_args)` returns the model's x0 prediction for a batch at noise level `sigma` [B].

`VPDenoiser` turns an improved-diffusion model and its discrete variance-preserving
schedule into such a denoiser: sigma_t = sqrt((1 - abar_t) / abar_t), the model sees
x_vp = sqrt(abar_t) * x at its own (base) timestep t, whatever it predicts (eps, x0 or
x_{t-1}; learned-variance channels are dropped) becomes x0, and the x0 is clipped,
dynamically thresholded or left alone. `run_sampler` is the one entry point that
`sampling.sample_mels` calls for "ddim", "dpmpp2m", "dpmpp2m_sde" and "ancestral".
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from .gaussian_diffusion import GaussianDiffusion, ModelVarType, _extract_into_tensor
from .respace import SpacedDiffusion, space_timesteps

SAMPLERS = ("ddim", "dpmpp2m", "dpmpp2m_sde", "ancestral")
# mel_sample.py's default, chosen by measurement (README "Which sampler, measured"): on the
# shipped model, 64 notes, the SDE form at 20 steps passes the note check 57/64 (the ODE 46/64,
# real notes 46/64) with the per-bin level closest to real, in the ODE's time.
DEFAULT_SAMPLER = "dpmpp2m_sde"
DEFAULT_STEPS = 20
X0_MODES = ("clip", "dynamic", "none")
SPACINGS = ("logsnr", "time")
Denoiser = Callable[..., torch.Tensor]


# ------------------------------------------------------------------ x0 handling


def dynamic_threshold(x0: torch.Tensor, percentile: float = 0.995) -> torch.Tensor:
    """Saharia et al. 2022 (Imagen): per sample, s = max(1, the `percentile` quantile of
    |x0|); x0 is clamped to [-s, s] and divided by s, so it lies in [-1, 1]. A sample whose
    quantile is at most 1 is only clamped to [-1, 1] (as plain clipping would)."""
    if not 0.0 < percentile <= 1.0:
        raise ValueError(f"percentile must lie in (0, 1], got {percentile}")
    flat = x0.reshape(x0.shape[0], -1).abs().float()
    s = torch.quantile(flat, percentile, dim=1).clamp(min=1.0).to(x0.dtype)
    s = s.view(-1, *([1] * (x0.ndim - 1)))
    return torch.maximum(torch.minimum(x0, s), -s) / s


def x0_processor(x0_mode: str, percentile: float = 0.995) -> Callable[[torch.Tensor], torch.Tensor]:
    """The x0 transform for `x0_mode`: "clip" (clamp to [-1, 1], upstream's clip_denoised),
    "dynamic" (dynamic_threshold) or "none"."""
    if x0_mode == "clip":
        return lambda x0: x0.clamp(-1, 1)
    if x0_mode == "dynamic":
        if not 0.0 < percentile <= 1.0:
            raise ValueError(f"percentile must lie in (0, 1], got {percentile}")
        return lambda x0: dynamic_threshold(x0, percentile)
    if x0_mode == "none":
        return lambda x0: x0
    raise ValueError(f"x0_mode must be one of {X0_MODES}, got {x0_mode!r}")


# ------------------------------------------------------------------ the solver


@torch.no_grad()
def sample_dpmpp_2m(
    denoise: Denoiser,
    x: torch.Tensor,
    sigmas: torch.Tensor | Sequence[float],
    extra_args: dict[str, Any] | None = None,
    callback: Callable[[dict[str, Any]], None] | None = None,
    progress: bool = False,
    eta: float = 0.0,
    noise_sampler: Callable[[float, float], torch.Tensor] | None = None,
) -> torch.Tensor:
    """DPM-Solver++(2M) (Lu et al. 2022, "DPM-Solver++", Algorithm 2), data prediction;
    with `eta` > 0 its SDE form (section 4 of the paper; k-diffusion's `sample_dpmpp_2m_sde`,
    midpoint variant).

    With lambda = -log(sigma) and h_i = lambda_{i+1} - lambda_i, each step is exact for
    a denoised value that is linear in lambda:
        x_{i+1} = (sigma_{i+1} / sigma_i) x_i - expm1(-h_i) D_i
    where D_i is the x0 prediction d_i on the first step and on the step to sigma = 0
    (which returns d_i itself), and otherwise the second-order multistep correction
        D_i = (1 + 1 / (2 r)) d_i - 1 / (2 r) d_{i-1},   r = h_{i-1} / h_i.
    One denoiser call per step: len(sigmas) - 1 calls.

    The SDE form (eta > 0) keeps only exp(-eta h) of the deterministic x path, takes the
    rest of the way with the same D_i, and adds back the noise that removed:
        x_{i+1} = (sigma_{i+1} / sigma_i) exp(-eta h) x_i - expm1(-(1 + eta) h) D_i
                  + sigma_{i+1} sqrt(-expm1(-2 eta h)) z_i,   z_i = noise_sampler(sigma_i, sigma_{i+1}).
    eta = 0 is the ODE above; eta = 1 injects noise as ancestral sampling does, which corrects
    the model's errors along the way at the price of needing more steps to settle.

    :param x: the start, at noise level sigmas[0], in sigma space.
    :param sigmas: decreasing noise levels (> 0 except possibly the last, which may be 0).
    :param callback: called after every denoiser call with k-diffusion's dict
        (x, i, sigma, sigma_hat, denoised).
    :param noise_sampler: N(0, I) draws shaped like x for (sigma_i, sigma_{i+1}); default
        torch.randn from the global generator.
    """
    if eta < 0:
        raise ValueError(f"eta must be >= 0, got {eta}")
    if noise_sampler is None:
        def noise_sampler(sigma: float, sigma_next: float) -> torch.Tensor:
            return torch.randn_like(x)
    extra_args = {} if extra_args is None else extra_args
    levels = [float(s) for s in (sigmas.tolist() if torch.is_tensor(sigmas) else sigmas)]
    if len(levels) < 2:
        raise ValueError("sigmas needs at least two levels (a start and an end)")
    if any(s <= 0 for s in levels[:-1]) or levels[-1] < 0:
        raise ValueError("sigmas must be positive (the last may be 0)")
    if any(b >= a for a, b in zip(levels, levels[1:])):
        raise ValueError("sigmas must be strictly decreasing")
    ones = x.new_ones([x.shape[0]])
    old_denoised = None
    h_last = None
    steps = range(len(levels) - 1)
    if progress:
        from tqdm.auto import tqdm

        steps = tqdm(steps, desc="dpmpp2m", unit="step")
    for i in steps:
        sigma, sigma_next = levels[i], levels[i + 1]
        denoised = denoise(x, sigma * ones, **extra_args)
        if callback is not None:
            callback({"x": x, "i": i, "sigma": sigma, "sigma_hat": sigma, "denoised": denoised})
        if sigma_next == 0:
            # lambda_{i+1} = inf: the step lands on the prediction (a first-order step).
            x = denoised
            continue
        h = math.log(sigma) - math.log(sigma_next)
        if old_denoised is None:
            d = denoised
        else:
            r = h_last / h
            d = (1 + 1 / (2 * r)) * denoised - (1 / (2 * r)) * old_denoised
        x = (sigma_next / sigma) * math.exp(-eta * h) * x - math.expm1(-(1 + eta) * h) * d
        if eta > 0:
            x = x + sigma_next * math.sqrt(-math.expm1(-2 * eta * h)) * noise_sampler(sigma, sigma_next)
        old_denoised, h_last = denoised, h
    return x


# ------------------------------------------------------------------ an improved-diffusion model as a denoiser


def base_diffusion(diffusion: GaussianDiffusion) -> GaussianDiffusion:
    """The un-respaced process behind `diffusion` (a SpacedDiffusion keeps its base betas),
    as a plain GaussianDiffusion: its tables are indexed by the model's own timesteps and
    its _scale_timesteps gives the model what it saw in training."""
    betas = getattr(diffusion, "base_betas", None)
    if betas is None:
        if (
            isinstance(diffusion, SpacedDiffusion)
            and len(diffusion.timestep_map) != diffusion.original_num_steps
        ):
            raise ValueError("this SpacedDiffusion does not record its base betas")
        betas = diffusion.betas
    return GaussianDiffusion(
        betas=betas,
        model_mean_type=diffusion.model_mean_type,
        model_var_type=diffusion.model_var_type,
        loss_type=diffusion.loss_type,
        rescale_timesteps=diffusion.rescale_timesteps,
    )


class VPDenoiser:
    """`denoise(x, sigma, **model_kwargs) -> x0` for a model trained on a discrete VP process.

    :param diffusion: the model's diffusion (respaced or not; its base process is used).
    :param x0_mode: "clip", "dynamic" or "none" (see x0_processor).
    """

    def __init__(
        self,
        model: Callable[..., torch.Tensor],
        diffusion: GaussianDiffusion,
        x0_mode: str = "clip",
        percentile: float = 0.995,
    ) -> None:
        self.model = model
        self.diffusion = base_diffusion(diffusion)
        self.process_x0 = x0_processor(x0_mode, percentile)
        abar = self.diffusion.alphas_cumprod
        # float64, ascending with t (sigma_0 is the smallest).
        self.sigmas = torch.from_numpy(np.sqrt((1.0 - abar) / abar))
        self.log_sigmas = self.sigmas.log()

    @property
    def num_timesteps(self) -> int:
        return self.diffusion.num_timesteps

    def sigma_to_t(self, sigma: torch.Tensor) -> torch.Tensor:
        """The nearest discrete timestep (in log sigma) for each sigma, as int64."""
        log_sigma = sigma.detach().double().log().cpu()
        t = (log_sigma[:, None] - self.log_sigmas[None, :]).abs().argmin(dim=1)
        return t.to(sigma.device)

    def get_sigmas(self, steps: int, spacing: str = "logsnr") -> torch.Tensor:
        """The table sigmas of timesteps(steps, spacing), then 0 (float64, steps + 1 levels:
        one denoiser call per level but the last)."""
        return torch.cat([self.sigmas[self.timesteps(steps, spacing)], self.sigmas.new_zeros(1)])

    def timesteps(self, steps: int, spacing: str = "logsnr") -> list[int]:
        """`steps` distinct base timesteps from T - 1 down to 0, decreasing.

        "logsnr": table entries about evenly spaced in log sigma (= -logSNR/2), so consecutive
        solver steps h (and their ratio r) stay about equal; "time": evenly
        spaced timesteps (as respacing "N" does). On Gaussian data, whose ODE solution is
        exact, DPM-Solver++(2M) with 20 "time" steps of the linear schedule was off by 0.43
        (its last steps have r ~ 0.2, so the multistep term extrapolates 2x past d_i), with
        "logsnr" by 0.026 (tests/test_samplers.py).
        """
        n = self.num_timesteps
        if not 1 <= steps <= n:
            raise ValueError(f"steps must lie in 1..{n}, got {steps}")
        if spacing == "time":
            return [int(t) for t in np.rint(np.linspace(n - 1, 0, steps))]
        if spacing != "logsnr":
            raise ValueError(f"spacing must be one of {SPACINGS}, got {spacing!r}")
        log_sigmas = self.log_sigmas.numpy()
        ts = [n - 1]
        for left in range(steps - 1, 0, -1):  # levels still to place, the last being t = 0
            cur = ts[-1]
            # an equal share of what is left of the log-sigma range; re-shared after every
            # pick, so a coarse stretch of the table (the cosine schedule's clipped last beta)
            # costs one long step instead of several wasted ones
            target = log_sigmas[cur] - (log_sigmas[cur] - log_sigmas[0]) / left
            lo = left - 1  # room for the levels below
            ts.append(lo + int(np.abs(log_sigmas[lo:cur] - target).argmin()))
        return ts

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor, **model_kwargs: Any) -> torch.Tensor:
        d = self.diffusion
        t = self.sigma_to_t(sigma)
        x_vp = _extract_into_tensor(d.sqrt_alphas_cumprod, t, x.shape) * x
        out = self.model(x_vp, d._scale_timesteps(t), **model_kwargs)
        if d.model_var_type in (ModelVarType.LEARNED, ModelVarType.LEARNED_RANGE):
            out = out[:, : x.shape[1]]  # the mean half, as p_mean_variance splits it
        return self.process_x0(d.predict_xstart(x_vp, t, out))


# ------------------------------------------------------------------ one entry point


def respaced(diffusion: GaussianDiffusion, section_counts: str) -> SpacedDiffusion:
    """`diffusion`'s base process respaced to `section_counts` ("ddim50", "250", ...)."""
    base = base_diffusion(diffusion)
    return SpacedDiffusion(
        use_timesteps=space_timesteps(base.num_timesteps, section_counts),
        betas=base.betas,
        model_mean_type=base.model_mean_type,
        model_var_type=base.model_var_type,
        loss_type=base.loss_type,
        rescale_timesteps=base.rescale_timesteps,
    )


def ddim_spacing(num_timesteps: int, steps: int) -> str:
    """ "ddimN" (upstream's integer stride) when one gives exactly N steps, else "N"."""
    try:
        space_timesteps(num_timesteps, f"ddim{steps}")
        return f"ddim{steps}"
    except ValueError:
        return str(steps)


def run_sampler(
    name: str,
    model: Callable[..., torch.Tensor],
    diffusion: GaussianDiffusion,
    shape: Sequence[int],
    noise: torch.Tensor | None = None,
    steps: int = 50,
    x0_mode: str = "clip",
    model_kwargs: dict[str, Any] | None = None,
    device: torch.device | str | None = None,
    progress: bool = False,
    percentile: float = 0.995,
    spacing: str = "logsnr",
) -> torch.Tensor:
    """Samples [*shape] with `steps` model calls, from `noise` (x_T ~ N(0, I), drawn when None).

    The process is rebuilt from `diffusion`'s base betas, whatever respacing it carries:
    - "ddim": upstream's ddim_sample_loop (eta 0) on "ddim{steps}" (integer stride from
      t = 0; "{steps}" evenly spaced when no stride gives exactly that many).
    - "ancestral": upstream's p_sample_loop on "{steps}" (draws from the global RNG).
    - "dpmpp2m": sample_dpmpp_2m over VPDenoiser.get_sigmas(steps, spacing), starting at
      the same point as x_T: x = x_T / sqrt(abar_{T-1}).
    - "dpmpp2m_sde": the same with eta = 1 (fresh noise each step, from the global RNG).
    ddim and dpmpp2m are deterministic functions of the noise. x0_mode ("clip", "dynamic",
    "none") acts on every x0 prediction in all four.
    """
    if name not in SAMPLERS:
        raise ValueError(f"sampler must be one of {SAMPLERS}, got {name!r}")
    process_x0 = x0_processor(x0_mode, percentile)
    model_kwargs = {} if model_kwargs is None else model_kwargs
    shape = tuple(shape)
    if device is None:
        device = noise.device if noise is not None else next(model.parameters()).device
    if noise is None:
        noise = torch.randn(*shape, device=device)
    if tuple(noise.shape) != shape:
        raise ValueError(f"noise shape {tuple(noise.shape)} != {shape}")
    num_timesteps = base_diffusion(diffusion).num_timesteps
    if not 1 <= steps <= num_timesteps:
        raise ValueError(f"steps must lie in 1..{num_timesteps}, got {steps}")
    # upstream's loops clip with clip_denoised; the other modes come in as denoised_fn
    loop_kwargs = dict(
        noise=noise,
        clip_denoised=x0_mode == "clip",
        denoised_fn=process_x0 if x0_mode == "dynamic" else None,
        model_kwargs=model_kwargs,
        device=device,
        progress=progress,
    )
    if name == "ddim":
        spaced = respaced(diffusion, ddim_spacing(num_timesteps, steps))
        return spaced.ddim_sample_loop(model, shape, **loop_kwargs)
    if name == "ancestral":
        return respaced(diffusion, str(steps)).p_sample_loop(model, shape, **loop_kwargs)
    denoiser = VPDenoiser(model, diffusion, x0_mode, percentile)
    sigmas = denoiser.get_sigmas(steps, spacing)
    x = noise * math.sqrt(1.0 + float(sigmas[0]) ** 2)  # = x_T / sqrt(abar_{T-1})
    eta = 1.0 if name == "dpmpp2m_sde" else 0.0
    return sample_dpmpp_2m(denoiser, x, sigmas, extra_args=model_kwargs, progress=progress, eta=eta)
