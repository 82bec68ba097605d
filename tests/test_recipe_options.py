"""The recipe's options beside upstream's: v-prediction, Min-SNR-gamma weighting, time/frequency
patches in the UNet, LR and EMA warm-up. Checked against their formulas."""

from __future__ import annotations

import types

import numpy as np
import pytest
import torch as th

from improved_diffusion import gaussian_diffusion as gd
from improved_diffusion.script_util import create_model_and_diffusion, model_and_diffusion_defaults
from improved_diffusion.train_util import TrainLoop


def diffusion(mean: gd.ModelMeanType, snr_gamma: float = 0.0, T: int = 50) -> gd.GaussianDiffusion:
    return gd.GaussianDiffusion(
        betas=gd.get_named_beta_schedule("cosine", T),
        model_mean_type=mean,
        model_var_type=gd.ModelVarType.FIXED_SMALL,
        loss_type=gd.LossType.MSE,
        snr_gamma=snr_gamma,
    )


def test_velocity_target_recovers_x0_and_eps():
    d = diffusion(gd.ModelMeanType.VELOCITY)
    g = th.Generator().manual_seed(0)
    x0, eps = th.randn(6, 1, 4, 8, generator=g), th.randn(6, 1, 4, 8, generator=g)
    t = th.tensor([0, 5, 10, 25, 40, 49])
    x_t = d.q_sample(x0, t, noise=eps)
    v = d._velocity(x0, t, eps)
    ab = th.from_numpy(d.alphas_cumprod)[t].float().view(-1, 1, 1, 1)
    assert th.allclose(v, ab.sqrt() * eps - (1 - ab).sqrt() * x0, atol=1e-6)
    assert th.allclose(d._predict_xstart_from_v(x_t, t, v), x0, atol=1e-5)
    # A model that outputs the exact velocity gives the exact x0 (and the eps-model's mean).
    out = d.p_mean_variance(lambda x, ts: v, x_t, t, clip_denoised=False)
    assert th.allclose(out["pred_xstart"], x0, atol=1e-5)
    d_eps = diffusion(gd.ModelMeanType.EPSILON)
    ref = d_eps.p_mean_variance(lambda x, ts: eps, x_t, t, clip_denoised=False)
    assert th.allclose(out["mean"], ref["mean"], atol=1e-5)


def test_velocity_loss_is_zero_for_the_true_velocity():
    d = diffusion(gd.ModelMeanType.VELOCITY)
    x0, eps = th.randn(4, 1, 4, 8), th.randn(4, 1, 4, 8)
    t = th.tensor([1, 10, 20, 45])
    model = lambda x_t, ts: d._velocity(x0, t, eps)  # noqa: E731
    assert th.allclose(d.training_losses(model, x0, t, noise=eps)["loss"], th.zeros(4), atol=1e-10)


@pytest.mark.parametrize(
    "mean, weight",
    [
        (gd.ModelMeanType.EPSILON, lambda snr, g: np.minimum(snr, g) / snr),
        (gd.ModelMeanType.VELOCITY, lambda snr, g: np.minimum(snr, g) / (snr + 1)),
        (gd.ModelMeanType.START_X, lambda snr, g: np.minimum(snr, g)),
    ],
)
def test_min_snr_weights_follow_hang_et_al(mean, weight):
    d = diffusion(mean, snr_gamma=5.0)
    t = th.arange(d.num_timesteps)
    snr = d.alphas_cumprod / (1 - d.alphas_cumprod)
    np.testing.assert_allclose(d._mse_weights(t).numpy(), weight(snr, 5.0), rtol=1e-6)
    # The loss is the raw MSE times that weight; 'mse' stays the raw value for the logs.
    x0, eps = th.randn(len(t), 1, 2, 4), th.randn(len(t), 1, 2, 4)
    terms = d.training_losses(lambda x, ts: th.zeros_like(x), x0, t, noise=eps)
    assert th.allclose(terms["loss"], terms["mse"] * d._mse_weights(t), atol=1e-6)
    assert diffusion(mean)._mse_weights(t) is None  # gamma 0 = upstream


def tiny_model(**flags):
    args = model_and_diffusion_defaults()
    args.update(
        num_channels=32,
        num_res_blocks=1,
        channel_mult="1,2",
        attention_resolutions="",
        crop_width=16,
    )
    args.update(flags)
    return create_model_and_diffusion(**args)[0]


def test_patched_unet_keeps_upstream_keys_and_shapes():
    th.manual_seed(0)
    plain, patched = tiny_model(), tiny_model(patch_size="2,4")
    assert [k for k in plain.state_dict()] == [k for k in patched.state_dict()]
    assert patched.size_multiples == (4, 8)
    x = th.randn(2, 1, 8, 16)
    assert patched._unpatchify(patched._patchify(x)).equal(x)
    # Each output channel group is one input channel's patch: learn_sigma's split still works.
    two = th.randn(2, 2, 8, 16)
    folded = patched._patchify(two)
    assert folded.shape == (2, 16, 4, 4) and folded[:, :8].equal(patched._patchify(two[:, :1]))
    for p in patched.out[-1].parameters():
        p.data.normal_()
    assert patched(x, th.tensor([1, 500])).shape == x.shape
    sigma = tiny_model(patch_size="2,4", learn_sigma=True)
    assert sigma(x, th.tensor([1, 2])).shape == (2, 2, 8, 16)


def test_patch_size_flag_errors():
    from melcore.errors import UserError

    with pytest.raises(UserError, match="--patch_size"):
        tiny_model(patch_size="2")
    with pytest.raises(UserError, match="--crop_width: 16 is not a multiple of 32"):
        tiny_model(patch_size="1,16")
    with pytest.raises(UserError, match="pick at most one"):
        create_model_and_diffusion(
            **{**model_and_diffusion_defaults(), "predict_v": True, "predict_xstart": True}
        )


def test_lr_and_ema_warmup():
    loop = types.SimpleNamespace(
        lr=1e-3, lr_anneal_steps=0, lr_warmup_steps=10, ema_warmup=True, step=0
    )
    loop.opt = types.SimpleNamespace(param_groups=[{"lr": 0.0}])
    lrs = []
    for step in (0, 4, 9, 50):
        loop.step = step
        TrainLoop._anneal_lr(loop)
        lrs.append(loop.opt.param_groups[0]["lr"])
    np.testing.assert_allclose(lrs, [1e-4, 5e-4, 1e-3, 1e-3])
    decays = []
    for step in (0, 10, 90, 100000):
        loop.step = step
        decays.append(TrainLoop._ema_decay(loop, 0.995))
    np.testing.assert_allclose(decays, [0.1, 11 / 20, 91 / 100, 0.995])
    loop.ema_warmup = False
    assert TrainLoop._ema_decay(loop, 0.995) == 0.995


def test_dpm_solver_denoiser_reads_velocity_models():
    from improved_diffusion.samplers import VPDenoiser

    g = th.Generator().manual_seed(3)
    x0, eps = th.randn(3, 1, 4, 8, generator=g), th.randn(3, 1, 4, 8, generator=g)
    t = th.tensor([2, 20, 45])
    denoised = {}
    for mean, target in (
        (gd.ModelMeanType.EPSILON, lambda d: eps),
        (gd.ModelMeanType.VELOCITY, lambda d: d._velocity(x0, t, eps)),
    ):
        d = diffusion(mean)
        den = VPDenoiser(lambda x, ts, d=d, target=target: target(d), d, x0_mode="none")
        sigma = den.sigmas[t].float()
        denoised[mean] = den(x0 + sigma.view(-1, 1, 1, 1) * eps, sigma)
    assert th.allclose(denoised[gd.ModelMeanType.VELOCITY], x0, atol=1e-4)
    assert th.allclose(denoised[gd.ModelMeanType.EPSILON], x0, atol=1e-4)
