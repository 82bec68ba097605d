"""nn helpers, likelihood helpers and fp16 utilities against their formulas."""

from __future__ import annotations

import math

import pytest
import torch as th

from improved_diffusion.fp16_util import (
    convert_module_to_f16,
    make_master_params,
    master_params_to_model_params,
    model_grads_to_master_grads,
)
from improved_diffusion.losses import (
    approx_standard_normal_cdf,
    discretized_gaussian_log_likelihood,
    normal_kl,
)
from improved_diffusion.nn import (
    GroupNorm32,
    checkpoint,
    mean_flat,
    scale_module,
    timestep_embedding,
    update_ema,
    zero_module,
)


def test_update_ema_matches_formula():
    g = th.Generator().manual_seed(0)
    targ = [th.randn(3, 4, generator=g), th.randn(5, generator=g)]
    src = [th.nn.Parameter(th.randn(3, 4, generator=g)), th.nn.Parameter(th.randn(5, generator=g))]
    expected = [0.9 * a + 0.1 * b.detach() for a, b in zip(targ, src)]
    update_ema(targ, src, rate=0.9)
    for a, e in zip(targ, expected):
        assert th.allclose(a, e, atol=1e-7)
    update_ema([], [], rate=0.5)  # nothing to do


def test_timestep_embedding_formula():
    t = th.tensor([0.0, 1.5, 999.0])
    emb = timestep_embedding(t, 8)
    freqs = th.tensor([math.exp(-math.log(10000) * i / 4) for i in range(4)])
    expected = th.cat([th.cos(t[:, None] * freqs), th.sin(t[:, None] * freqs)], dim=1)
    assert th.allclose(emb, expected, atol=1e-5)
    odd = timestep_embedding(t, 9)
    assert odd.shape == (3, 9) and th.equal(odd[:, -1], th.zeros(3))


def test_groupnorm32_computes_in_float32():
    gn = GroupNorm32(2, 4)
    x = th.randn(2, 4, 3, 3) * 100 + 1000
    out = gn(x.half())
    assert out.dtype == th.float16
    assert th.allclose(out.float(), gn(x), atol=2e-2)


def test_zero_scale_mean_flat():
    m = zero_module(th.nn.Linear(3, 3))
    assert th.equal(m.weight, th.zeros(3, 3))
    lin = th.nn.Linear(2, 2)
    w = lin.weight.detach().clone()
    assert th.allclose(scale_module(lin, 3.0).weight, 3 * w)
    assert th.equal(mean_flat(th.arange(12.0).reshape(2, 2, 3)), th.tensor([2.5, 8.5]))


def test_checkpoint_flag_same_values_and_grads():
    lin = th.nn.Linear(4, 4)
    x = th.randn(2, 4, requires_grad=True)
    outs = []
    for flag in (False, True):
        lin.zero_grad()
        x.grad = None
        y = checkpoint(lambda a: th.tanh(lin(a)), (x,), lin.parameters(), flag)
        y.sum().backward()
        outs.append((y.detach(), x.grad.clone(), lin.weight.grad.clone()))
    for a, b in zip(*outs):
        assert th.allclose(a, b)


def test_normal_kl_formula_and_zero_for_equal():
    m1, lv1 = th.tensor([0.3]), th.tensor([math.log(0.5)])
    kl = normal_kl(m1, lv1, 0.0, 0.0)
    expected = 0.5 * (-1 - math.log(0.5) + 0.5 + 0.09)
    assert kl.item() == pytest.approx(expected, rel=1e-6)
    assert normal_kl(m1, lv1, m1, lv1).item() == 0.0


def test_discretized_gaussian_log_likelihood_sums_to_one():
    # Probabilities of all 256 bins of an 8-bit image sum to 1 for any Gaussian.
    x = (th.arange(256.0) / 127.5 - 1).view(1, 256)
    means = th.full_like(x, 0.2)
    log_scales = th.full_like(x, math.log(0.3))
    logp = discretized_gaussian_log_likelihood(x, means=means, log_scales=log_scales)
    assert logp.exp().sum().item() == pytest.approx(1.0, rel=1e-6)
    assert abs(approx_standard_normal_cdf(th.tensor(1.0)).item() - 0.8413447) < 1e-3


def test_fp16_master_params_round_trip():
    model = th.nn.Sequential(th.nn.Conv2d(1, 2, 3), th.nn.Linear(3, 3))
    model.apply(convert_module_to_f16)
    assert model[0].weight.dtype == th.float16 and model[1].weight.dtype == th.float32
    params = list(model.parameters())
    master = make_master_params(params)
    assert master[0].dtype == th.float32 and master[0].numel() == sum(p.numel() for p in params)
    for p in params:
        p.grad = th.ones_like(p)
    model_grads_to_master_grads(params, master)
    assert th.equal(master[0].grad, th.ones(master[0].numel()))
    with th.no_grad():
        master[0].add_(1.0)
    before = [p.detach().float().clone() for p in params]
    master_params_to_model_params(params, master)
    for b, p in zip(before, params):
        assert th.allclose(p.float(), b + 1, atol=1e-2)
