"""Build a model and diffusion from flat flags: the single source of defaults.

model_and_diffusion_defaults() is upstream's dict plus the mel additions; scripts turn it
into argparse flags (add_dict_to_argparser), store the values in args.json, and call
create_model_and_diffusion(**values). Upstream's flags with in_channels=3 build upstream's
exact image models, so their checkpoints load.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterable
from typing import Any

from melcore.errors import UserError

from . import gaussian_diffusion as gd
from .respace import SpacedDiffusion, space_timesteps
from .unet import ATTENTION_IMPLS, UNetModel

NUM_CLASSES = 1000

# Upstream's channel multipliers by image size, used when --channel_mult is empty.
# The default image_size 64 gives (1, 2, 3, 4): three 2x downsamplings, which fits
# 80 mel bins (80 -> 40 -> 20 -> 10) and any crop width that is a multiple of 8.
_CHANNEL_MULT_BY_SIZE = {256: (1, 1, 2, 2, 4, 4), 64: (1, 2, 3, 4), 32: (1, 2, 2, 2)}


def model_and_diffusion_defaults() -> dict[str, Any]:
    """Defaults for every model and diffusion flag (upstream's names and values + mel ones).

    Mel additions: in_channels (1), num_mels (80: the input height), crop_width (64 mel
    frames: the input width in training), channel_mult ("" = upstream's choice for
    image_size), attention_impl ("sdpa" or "einsum"). image_size is kept: it is the
    reference size that attention_resolutions are divided into (ds = image_size // res)
    and that picks the default channel_mult, exactly as upstream.
    """
    return dict(
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
        in_channels=1,
        num_mels=80,
        crop_width=64,
        channel_mult="",
        attention_impl="sdpa",
        predict_v=False,
        snr_gamma=0.0,
        patch_size="1,1",
    )


def training_defaults() -> dict[str, Any]:
    """Training flags (upstream's plus the mel additions); with model_and_diffusion_defaults()
    they are mel_train.py's flags and the contents of args.json."""
    return dict(
        data_dir="",
        log_dir="",
        schedule_sampler="uniform",
        lr=1e-4,
        weight_decay=0.0,
        lr_anneal_steps=0,
        batch_size=1,
        microbatch=-1,
        ema_rate="0.9999",
        log_interval=10,
        save_interval=10000,
        resume_checkpoint="",
        use_fp16=False,
        fp16_scale_growth=1e-3,
        max_steps=0,
        precision="auto",  # fast.resolve_precision: bf16 on CUDA and bf16-capable CPUs, else fp32
        grad_clip=0.0,
        val_interval=1000,
        val_samples=64,
        sample_interval=5000,
        sample_count=4,
        sample_wav=True,
        seed=0,
        keep_checkpoints=0,
        keep_steps="",  # checkpoints saved and never pruned at these steps ("400": the demo's guide)
        num_workers=2,
        max_bad_steps=10,
        lr_warmup_steps=0,
        ema_warmup=False,
        max_train_seconds=0.0,
    )


# Sampling with DDIM: this many steps (fewer for shorter chains) unless --timestep_respacing says.
DDIM_STEPS = 50


def default_respacing(diffusion_steps: int) -> str:
    """The default sampling respacing: DDIM with DDIM_STEPS steps, or every step for shorter chains."""
    return f"ddim{min(DDIM_STEPS, diffusion_steps)}"


def create_model_and_diffusion(
    image_size: int,
    class_cond: bool,
    learn_sigma: bool,
    sigma_small: bool,
    num_channels: int,
    num_res_blocks: int,
    num_heads: int,
    num_heads_upsample: int,
    attention_resolutions: str,
    dropout: float,
    diffusion_steps: int,
    noise_schedule: str,
    timestep_respacing: str,
    use_kl: bool,
    predict_xstart: bool,
    rescale_timesteps: bool,
    rescale_learned_sigmas: bool,
    use_checkpoint: bool,
    use_scale_shift_norm: bool,
    in_channels: int = 1,
    num_mels: int = 80,
    crop_width: int = 64,
    channel_mult: str = "",
    attention_impl: str = "sdpa",
    predict_v: bool = False,
    snr_gamma: float = 0.0,
    patch_size: str = "1,1",
) -> tuple[UNetModel, SpacedDiffusion]:
    """The UNet and the (possibly respaced) diffusion for a full set of flags.

    The mel flags have defaults so that an upstream flag set (without them) still works;
    num_mels and crop_width are only checked against the model's downsampling here.
    """
    model = create_model(
        image_size,
        num_channels,
        num_res_blocks,
        learn_sigma=learn_sigma,
        class_cond=class_cond,
        use_checkpoint=use_checkpoint,
        attention_resolutions=attention_resolutions,
        num_heads=num_heads,
        num_heads_upsample=num_heads_upsample,
        use_scale_shift_norm=use_scale_shift_norm,
        dropout=dropout,
        in_channels=in_channels,
        channel_mult=channel_mult,
        attention_impl=attention_impl,
        patch_size=patch_size,
    )
    for flag, size, f in zip(("--num_mels", "--crop_width"), (num_mels, crop_width), model.size_multiples):
        if size % f:
            raise UserError(
                f"{flag}: {size} is not a multiple of {f}, which the UNet's "
                f"{len(model.channel_mult) - 1} downsamplings and --patch_size {patch_size} "
                f"need; pick a multiple of {f} or a shorter --channel_mult"
            )
    diffusion = create_gaussian_diffusion(
        steps=diffusion_steps,
        learn_sigma=learn_sigma,
        sigma_small=sigma_small,
        noise_schedule=noise_schedule,
        use_kl=use_kl,
        predict_xstart=predict_xstart,
        rescale_timesteps=rescale_timesteps,
        rescale_learned_sigmas=rescale_learned_sigmas,
        timestep_respacing=timestep_respacing,
        predict_v=predict_v,
        snr_gamma=snr_gamma,
    )
    return model, diffusion


def diffusion_from_args(args: dict[str, Any], timestep_respacing: str | None = None):
    """The diffusion a flag dict (model_and_diffusion_defaults keys, e.g. a run's args.json)
    describes, optionally with another respacing (sampling previews, benchmarks)."""
    return create_gaussian_diffusion(
        steps=args["diffusion_steps"],
        learn_sigma=args["learn_sigma"],
        sigma_small=args["sigma_small"],
        noise_schedule=args["noise_schedule"],
        use_kl=args["use_kl"],
        predict_xstart=args["predict_xstart"],
        rescale_timesteps=args["rescale_timesteps"],
        rescale_learned_sigmas=args["rescale_learned_sigmas"],
        timestep_respacing=args["timestep_respacing"] if timestep_respacing is None else timestep_respacing,
        predict_v=args.get("predict_v", False),
        snr_gamma=args.get("snr_gamma", 0.0),
    )


def parse_channel_mult(channel_mult: str | Iterable[int], image_size: int) -> tuple[int, ...]:
    """Parse "1,2,3,4" to (1, 2, 3, 4); "" gives upstream's choice for image_size."""
    if not isinstance(channel_mult, str):
        return tuple(int(m) for m in channel_mult)
    if channel_mult.strip():
        try:
            mult = tuple(int(m) for m in channel_mult.split(","))
        except ValueError:
            raise UserError(
                f"--channel_mult: {channel_mult!r} is not a comma-separated list of integers; "
                "e.g. --channel_mult 1,2,3,4"
            ) from None
        if not mult or min(mult) < 1:
            raise UserError(f"--channel_mult: {channel_mult!r} needs positive integers")
        return mult
    if image_size not in _CHANNEL_MULT_BY_SIZE:
        raise UserError(
            f"--image_size: no default channel_mult for {image_size} (known: "
            f"{sorted(_CHANNEL_MULT_BY_SIZE)}); pass --channel_mult, e.g. 1,2,3,4"
        )
    return _CHANNEL_MULT_BY_SIZE[image_size]


def parse_attention_resolutions(attention_resolutions: str, image_size: int) -> tuple[int, ...]:
    """Upstream's "16,8" resolutions -> downsample rates image_size // res (e.g. 4, 8)."""
    if not attention_resolutions.strip():
        return ()
    try:
        res = [int(r) for r in attention_resolutions.split(",")]
    except ValueError:
        raise UserError(
            f"--attention_resolutions: {attention_resolutions!r} is not a comma-separated "
            "list of integers; e.g. 16,8"
        ) from None
    if min(res) < 1:
        raise UserError(f"--attention_resolutions: {attention_resolutions!r} must be positive")
    return tuple(image_size // r for r in res)


def create_model(
    image_size: int,
    num_channels: int,
    num_res_blocks: int,
    learn_sigma: bool,
    class_cond: bool,
    use_checkpoint: bool,
    attention_resolutions: str,
    num_heads: int,
    num_heads_upsample: int,
    use_scale_shift_norm: bool,
    dropout: float,
    in_channels: int = 1,
    channel_mult: str | Iterable[int] = "",
    attention_impl: str = "sdpa",
    patch_size: str | Iterable[int] = "1,1",
) -> UNetModel:
    """The UNet for the flags (output channels double when learn_sigma)."""
    if attention_impl not in ATTENTION_IMPLS:
        raise UserError(
            f"--attention_impl: unknown value {attention_impl!r}; use one of {ATTENTION_IMPLS}"
        )
    mult = parse_channel_mult(channel_mult, image_size)
    if num_channels < 1 or num_channels % 32:
        # Every block normalises with GroupNorm over 32 groups (upstream's normalization()).
        raise UserError(f"--num_channels {num_channels}: must be a positive multiple of 32, e.g. 32, 64, 128")
    return UNetModel(
        in_channels=in_channels,
        model_channels=num_channels,
        out_channels=in_channels * 2 if learn_sigma else in_channels,
        num_res_blocks=num_res_blocks,
        attention_resolutions=parse_attention_resolutions(attention_resolutions, image_size),
        dropout=dropout,
        channel_mult=mult,
        num_classes=NUM_CLASSES if class_cond else None,
        use_checkpoint=use_checkpoint,
        num_heads=num_heads,
        num_heads_upsample=num_heads_upsample,
        use_scale_shift_norm=use_scale_shift_norm,
        attention_impl=attention_impl,
        patch_size=parse_patch_size(patch_size),
    )


def parse_patch_size(patch_size: str | Iterable[int]) -> tuple[int, int]:
    """"1,4" -> (1, 4): the (mel bins, frames) patch folded into channels; "1,1" is upstream."""
    if not isinstance(patch_size, str):
        patch = tuple(int(p) for p in patch_size)
    else:
        try:
            patch = tuple(int(p) for p in patch_size.split(",")) if patch_size.strip() else (1, 1)
        except ValueError:
            patch = ()
    if len(patch) != 2 or min(patch) < 1:
        raise UserError(f"--patch_size: {patch_size!r} must be two positive integers, e.g. 1,4")
    return patch


def create_gaussian_diffusion(
    *,
    steps: int = 1000,
    learn_sigma: bool = False,
    sigma_small: bool = False,
    noise_schedule: str = "linear",
    use_kl: bool = False,
    predict_xstart: bool = False,
    rescale_timesteps: bool = False,
    rescale_learned_sigmas: bool = False,
    timestep_respacing: str | Iterable[int] = "",
    predict_v: bool = False,
    snr_gamma: float = 0.0,
) -> SpacedDiffusion:
    """The diffusion for the flags; timestep_respacing "" keeps all `steps` steps."""
    if noise_schedule not in ("linear", "cosine"):
        raise UserError(f"--noise_schedule: unknown {noise_schedule!r}; use linear or cosine")
    if steps < 1:
        raise UserError(f"--diffusion_steps {steps}: must be positive")
    betas = gd.get_named_beta_schedule(noise_schedule, steps)
    if betas.max() > 1.0:
        # The linear schedule is rescaled by 1000/steps: below 20 steps its last beta exceeds 1.
        raise UserError(
            f"--diffusion_steps {steps} with --noise_schedule {noise_schedule}: the noise schedule's "
            f"betas reach {betas.max():.3g} (at most 1 is possible); use --diffusion_steps >= 20 or "
            "--noise_schedule cosine"
        )
    if use_kl:
        loss_type = gd.LossType.RESCALED_KL
    elif rescale_learned_sigmas:
        loss_type = gd.LossType.RESCALED_MSE
    else:
        loss_type = gd.LossType.MSE
    if learn_sigma:
        model_var_type = gd.ModelVarType.LEARNED_RANGE
    elif sigma_small:
        model_var_type = gd.ModelVarType.FIXED_SMALL
    else:
        model_var_type = gd.ModelVarType.FIXED_LARGE
    if predict_xstart and predict_v:
        raise UserError("--predict_xstart and --predict_v: pick at most one model target")
    if snr_gamma < 0:
        raise UserError(f"--snr_gamma {snr_gamma}: must be >= 0 (0 turns Min-SNR weighting off)")
    if snr_gamma and use_kl:
        raise UserError("--snr_gamma weights the MSE loss; it does not apply with --use_kl")
    mean_type = gd.ModelMeanType.EPSILON
    if predict_xstart:
        mean_type = gd.ModelMeanType.START_X
    elif predict_v:
        mean_type = gd.ModelMeanType.VELOCITY
    if not timestep_respacing:
        timestep_respacing = [steps]
    try:
        use_timesteps = space_timesteps(steps, timestep_respacing)
    except ValueError as exc:
        raise UserError(
            f"--timestep_respacing: {timestep_respacing!r} does not fit {steps} steps ({exc}); "
            'use e.g. "ddim50", "250" or "10,10"'
        ) from None
    return SpacedDiffusion(
        use_timesteps=use_timesteps,
        betas=betas,
        model_mean_type=mean_type,
        model_var_type=model_var_type,
        loss_type=loss_type,
        rescale_timesteps=rescale_timesteps,
        snr_gamma=snr_gamma,
    )


def add_dict_to_argparser(parser: argparse.ArgumentParser, default_dict: dict[str, Any]) -> None:
    """One --flag per key, typed from its default (bools accept yes/no/true/false/1/0)."""
    for k, v in default_dict.items():
        v_type: Any = type(v)
        if v is None:
            v_type = str
        elif isinstance(v, bool):
            v_type = str2bool
        parser.add_argument(f"--{k}", default=v, type=v_type)


def args_to_dict(args: argparse.Namespace, keys: Iterable[str]) -> dict[str, Any]:
    """{k: args.k} for the given keys."""
    return {k: getattr(args, k) for k in keys}


def str2bool(v: str | bool) -> bool:
    """Parse a boolean flag value."""
    if isinstance(v, bool):
        return v
    if v.lower() in ("yes", "true", "t", "y", "1"):
        return True
    if v.lower() in ("no", "false", "f", "n", "0"):
        return False
    raise argparse.ArgumentTypeError("boolean value expected")
