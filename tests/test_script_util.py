"""script_util: the defaults dict, flag parsing, and the one create_* path."""

from __future__ import annotations

import argparse
import inspect

import pytest

from improved_diffusion import gaussian_diffusion as gd
from improved_diffusion.respace import SpacedDiffusion
from improved_diffusion.script_util import (
    add_dict_to_argparser,
    args_to_dict,
    create_model_and_diffusion,
    model_and_diffusion_defaults,
    str2bool,
)
from melcore.errors import UserError

UPSTREAM_DEFAULTS = dict(
    image_size=64,
    num_channels=128,
    num_res_blocks=2,
    num_heads=4,
    num_heads_upsample=-1,
    attention_resolutions="16,8",
    dropout=0.0,
    learn_sigma=False,
    sigma_small=False,
    class_cond=False,
    diffusion_steps=1000,
    noise_schedule="linear",
    timestep_respacing="",
    use_kl=False,
    predict_xstart=False,
    rescale_timesteps=True,
    rescale_learned_sigmas=True,
    use_checkpoint=False,
    use_scale_shift_norm=True,
)
MEL_DEFAULTS = dict(
    in_channels=1, num_mels=80, crop_width=64, channel_mult="", attention_impl="sdpa",
    predict_v=False, snr_gamma=0.0, patch_size="1,1",
)


def small(**overrides):
    return {**model_and_diffusion_defaults(), "num_channels": 32, "num_res_blocks": 1, **overrides}


def test_defaults_are_upstream_plus_mel():
    assert model_and_diffusion_defaults() == {**UPSTREAM_DEFAULTS, **MEL_DEFAULTS}
    # The signature's defaults for the mel flags agree with the dict (one source of truth).
    params = inspect.signature(create_model_and_diffusion).parameters
    assert set(params) == set(model_and_diffusion_defaults())
    for k, v in MEL_DEFAULTS.items():
        assert params[k].default == v, k


def test_default_mel_model_and_diffusion():
    model, diffusion = create_model_and_diffusion(**small())
    assert model.in_channels == 1 and model.out_channels == 1
    assert model.channel_mult == (1, 2, 3, 4) and model.downsample_factor == 8
    assert model.attention_resolutions == (4, 8)  # 64 // 16, 64 // 8
    assert model.num_classes is None and model.attention_impl == "sdpa"
    assert isinstance(diffusion, SpacedDiffusion) and diffusion.num_timesteps == 1000
    assert diffusion.model_mean_type == gd.ModelMeanType.EPSILON
    assert diffusion.model_var_type == gd.ModelVarType.FIXED_LARGE
    assert diffusion.loss_type == gd.LossType.RESCALED_MSE
    assert diffusion.rescale_timesteps


@pytest.mark.parametrize(
    "flags,mean,var,loss",
    [
        (dict(learn_sigma=True), "EPSILON", "LEARNED_RANGE", "RESCALED_MSE"),
        (dict(sigma_small=True), "EPSILON", "FIXED_SMALL", "RESCALED_MSE"),
        (dict(use_kl=True, predict_xstart=True), "START_X", "FIXED_LARGE", "RESCALED_KL"),
        (dict(rescale_learned_sigmas=False), "EPSILON", "FIXED_LARGE", "MSE"),
    ],
)
def test_diffusion_flags(flags, mean, var, loss):
    model, d = create_model_and_diffusion(**small(channel_mult="1,2", **flags))
    assert d.model_mean_type == gd.ModelMeanType[mean]
    assert d.model_var_type == gd.ModelVarType[var]
    assert d.loss_type == gd.LossType[loss]
    assert model.out_channels == (2 if var == "LEARNED_RANGE" else 1)


def test_upstream_image_flags_build_upstream_models():
    flags = {**UPSTREAM_DEFAULTS, "num_channels": 32, "image_size": 32, "learn_sigma": True}
    model, d = create_model_and_diffusion(**flags, in_channels=3, num_mels=32, crop_width=32)
    assert model.channel_mult == (1, 2, 2, 2) and model.attention_resolutions == (2, 4)
    assert (model.in_channels, model.out_channels) == (3, 6)
    model, _ = create_model_and_diffusion(
        **{**flags, "image_size": 256, "class_cond": True},
        in_channels=3,
        num_mels=256,
        crop_width=256,
    )
    assert model.channel_mult == (1, 1, 2, 2, 4, 4) and model.num_classes == 1000


def test_respacing_and_channel_mult_flags():
    model, d = create_model_and_diffusion(
        **small(channel_mult="1,2,2", timestep_respacing="ddim50", crop_width=20)
    )
    assert model.channel_mult == (1, 2, 2) and d.num_timesteps == 50
    assert d.timestep_map[:3] == [0, 20, 40]


@pytest.mark.parametrize(
    "flags,match",
    [
        (dict(crop_width=60), "--crop_width"),
        (dict(num_mels=84, channel_mult="1,2,2,2,2"), "--num_mels"),
        (dict(channel_mult="1,x"), "--channel_mult"),
        (dict(channel_mult="", image_size=48), "--image_size"),
        (dict(attention_resolutions="16;8"), "--attention_resolutions"),
        (dict(timestep_respacing="ddim999"), "--timestep_respacing"),
        (dict(noise_schedule="sigmoid"), "--noise_schedule"),
        (dict(attention_impl="flash"), "--attention_impl"),
    ],
)
def test_bad_flags_are_user_errors(flags, match):
    with pytest.raises(UserError, match=match):
        create_model_and_diffusion(**small(**flags))


def test_argparser_round_trip():
    parser = argparse.ArgumentParser()
    defaults = model_and_diffusion_defaults()
    add_dict_to_argparser(parser, defaults)
    args = parser.parse_args(
        ["--learn_sigma", "yes", "--channel_mult", "1,2", "--crop_width", "128", "--dropout", "0.1"]
    )
    values = args_to_dict(args, defaults.keys())
    assert values == {
        **defaults,
        "learn_sigma": True,
        "channel_mult": "1,2",
        "crop_width": 128,
        "dropout": 0.1,
    }
    assert str2bool("F") is False and str2bool(True) is True
    with pytest.raises(argparse.ArgumentTypeError):
        str2bool("maybe")
