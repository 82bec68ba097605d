"""Likelihood helpers of Ho et al.'s diffusion code: Gaussian KL and a discretized Gaussian."""

from __future__ import annotations

import math

import torch as th


def normal_kl(mean1, logvar1, mean2, logvar2) -> th.Tensor:
    """KL(N(mean1, exp(logvar1)) || N(mean2, exp(logvar2))), elementwise and broadcast.

    Any argument may be a Python float as long as one of them is a tensor.
    """
    ref = next((o for o in (mean1, logvar1, mean2, logvar2) if isinstance(o, th.Tensor)), None)
    if ref is None:
        raise TypeError("normal_kl: at least one argument must be a Tensor")
    # th.exp needs tensors; scalars become tensors of the reference's dtype/device.
    logvar1, logvar2 = (
        v if isinstance(v, th.Tensor) else th.tensor(v).to(ref) for v in (logvar1, logvar2)
    )
    return 0.5 * (
        -1.0
        + logvar2
        - logvar1
        + th.exp(logvar1 - logvar2)
        + ((mean1 - mean2) ** 2) * th.exp(-logvar2)
    )


def approx_standard_normal_cdf(x: th.Tensor) -> th.Tensor:
    """Fast tanh approximation of the standard normal CDF."""
    return 0.5 * (1.0 + th.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * th.pow(x, 3))))


def discretized_gaussian_log_likelihood(
    x: th.Tensor, *, means: th.Tensor, log_scales: th.Tensor
) -> th.Tensor:
    """Log-probability (nats) of x under a Gaussian discretised to 256 bins over [-1, 1].

    The edge bins extend to -inf / +inf, as for 8-bit images rescaled to [-1, 1].
    """
    if not x.shape == means.shape == log_scales.shape:
        raise ValueError(f"shape mismatch: {x.shape}, {means.shape}, {log_scales.shape}")
    centered_x = x - means
    inv_stdv = th.exp(-log_scales)
    cdf_plus = approx_standard_normal_cdf(inv_stdv * (centered_x + 1.0 / 255.0))
    cdf_min = approx_standard_normal_cdf(inv_stdv * (centered_x - 1.0 / 255.0))
    log_cdf_plus = th.log(cdf_plus.clamp(min=1e-12))
    log_one_minus_cdf_min = th.log((1.0 - cdf_min).clamp(min=1e-12))
    log_cdf_delta = th.log((cdf_plus - cdf_min).clamp(min=1e-12))
    return th.where(
        x < -0.999,
        log_cdf_plus,
        th.where(x > 0.999, log_one_minus_cdf_min, log_cdf_delta),
    )
