"""The orchestration: flags -> mel set, model, diffusion and TrainLoop; samples -> npy/png/wav.

The one module that joins the diffusion (improved_diffusion, which knows no audio and no
vocoder), the mel sets (melcore) and the vocoders (hifigan). scripts/mel_train.py and
scripts/mel_sample.py are thin CLIs over `train_from_args` and `sample_from_checkpoint`;
training previews reach TrainLoop as its `preview` callback (`make_preview`), so sampled
mels are written and vocoded here, never inside the training loop.
"""

from __future__ import annotations

import math
import os
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from hifigan.inference import limit_peaks, peak_note, vocode_batches, vocoder_for, write_wavs
from improved_diffusion import checkpoint as ckpt
from improved_diffusion import fast
from improved_diffusion import logger as logger_mod
from improved_diffusion.checkpoint import load_model, read_args
from improved_diffusion.evaluate import melset_windows
from improved_diffusion.guidance import (
    DEFAULT_GUIDANCE,
    DEFAULT_GUIDANCE_INTERVAL,
    GuidedModel,
    guide_mismatch,
    max_model_timestep,
)
from improved_diffusion.image_datasets import load_data, longest_clip
from improved_diffusion.resample import create_named_schedule_sampler
from improved_diffusion.samplers import DEFAULT_STEPS, SAMPLERS, X0_MODES
from improved_diffusion.sampling import sample_mels
from improved_diffusion.script_util import (
    create_model_and_diffusion,
    default_respacing,
    diffusion_from_args,
    model_and_diffusion_defaults,
)
from improved_diffusion.train_util import TrainLoop
from melcore import dist_util
from melcore.atomic import atomic_open, ensure_dir, save_npy, write_json
from melcore.errors import UserError
from melcore.mel_config import MelConfig, require_match
from melcore.melset import MelSet
from melcore.run_lock import lock_run_folder


# -- spectrogram pictures and sample files --------------------------------------------------------
def spectrogram_rgb(log_mel: np.ndarray, config: MelConfig) -> np.ndarray:
    """uint8 [H, W, 3] image of a log-mel (low bins at the bottom), fixed colour range."""
    from matplotlib import colormaps

    x = (np.clip(config.normalize(log_mel), -1, 1) + 1) / 2
    rgb = colormaps["magma"](x[::-1])[..., :3]
    return (rgb * 255).astype(np.uint8)


def save_spectrogram_png(
    path: str | os.PathLike, log_mel: np.ndarray, config: MelConfig, title: str = ""
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(max(3.0, log_mel.shape[1] / 16), 3.0), dpi=100)
    im = ax.imshow(
        log_mel,
        origin="lower",
        aspect="auto",
        cmap="magma",
        vmin=config.mel_min,
        vmax=config.mel_max,
    )
    ax.set_xlabel(f"frame (hop {config.hop_size} @ {config.sampling_rate} Hz)")
    ax.set_ylabel("mel bin")
    ax.set_title(title, fontsize=9)
    fig.colorbar(im, ax=ax, label="log-mel")
    fig.tight_layout()
    with atomic_open(path, "wb") as f:
        fig.savefig(f, format="png")
    plt.close(fig)


def _names_and_mels(
    samples: np.ndarray, config: MelConfig, start_index: int
) -> tuple[list[str], list[np.ndarray]]:
    mels = [config.denormalize(s[0]).astype(np.float32) for s in samples]
    return [f"sample_{start_index + i:05d}" for i in range(len(mels))], mels


def write_sample_files(
    out_dir: str | os.PathLike,
    samples: np.ndarray,
    config: MelConfig,
    *,
    start_index: int = 0,
    wav: bool = True,
    vocoder_checkpoint: str | None = None,
    griffin_lim: bool = False,
    tensorboard=None,
    step: int = 0,
    device: str = "cpu",
    trust: bool = False,
) -> list[str]:
    """Per sample: sample_{i:05d}.npy (denormalised log-mel [num_mels, W]), .png and .wav.

    Also writes mel_config.json (and vocoder.json when WAVs are written). Returns notes
    for the user (e.g. which vocoder ran, or why no WAVs were written).
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    config.save(out_dir / "mel_config.json")
    for name, mel in zip(*_names_and_mels(samples, config, start_index)):
        save_npy(out_dir / f"{name}.npy", mel)
        save_spectrogram_png(out_dir / f"{name}.png", mel, config, name)
        if tensorboard is not None:
            tensorboard.add_image(
                f"samples/{name}", spectrogram_rgb(mel, config), step, dataformats="HWC"
            )
    if not wav:
        return []
    return write_sample_wavs(
        out_dir,
        samples,
        config,
        start_index=start_index,
        vocoder_checkpoint=vocoder_checkpoint,
        griffin_lim=griffin_lim,
        tensorboard=tensorboard,
        step=step,
        device=device,
        trust=trust,
    )


def write_sample_wavs(
    out_dir: str | os.PathLike,
    samples: np.ndarray,
    config: MelConfig,
    *,
    start_index: int = 0,
    vocoder_checkpoint: str | None = None,
    griffin_lim: bool = False,
    tensorboard=None,
    step: int = 0,
    device: str = "cpu",
    trust: bool = False,
) -> list[str]:
    """sample_{i:05d}.wav per sample via hifigan.inference (named *_griffinlim.wav when the
    Griffin-Lim fallback ran) and vocoder.json; returns notes for the user."""
    out_dir = Path(out_dir)
    names, mels = _names_and_mels(samples, config, start_index)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the fallback is reported below instead
        vocoder = vocoder_for(
            config,
            checkpoint=vocoder_checkpoint,
            griffin_lim=griffin_lim,
            device=device,
            trust=trust,
        )
    audios, limited = limit_peaks(vocode_batches(vocoder, mels, progress=False))
    # A Griffin-Lim file is named as such, so nobody mistakes it for the vocoder's quality.
    suffix = "_griffinlim" if vocoder.is_fallback else ""
    write_wavs(audios, [n + suffix for n in names], out_dir, vocoder.sampling_rate)
    write_json(out_dir / "vocoder.json", vocoder.describe())
    if tensorboard is not None:
        for name, y in zip(names, audios):
            tensorboard.add_audio(
                f"audio/{name}", torch.as_tensor(y)[None], step, sample_rate=vocoder.sampling_rate
            )
    label = "Griffin-Lim fallback (no matching HiFi-GAN)" if vocoder.is_fallback else vocoder.name
    return [f"WAVs written with {label}", *peak_note(limited, len(audios))]


# -- mel_sample.py ----------------------------------------------------------------------------------
def check_sampler_flags(sampler: str, steps: int, x0_mode: str, diffusion_steps: int) -> None:
    """UserErrors naming --sampler / --steps / --x0 for values run_sampler cannot take."""
    if sampler not in SAMPLERS:
        raise UserError(f"--sampler: unknown {sampler!r}; choose one of {', '.join(SAMPLERS)}")
    if x0_mode not in X0_MODES:
        raise UserError(f"--x0: unknown {x0_mode!r}; choose one of {', '.join(X0_MODES)}")
    if not 1 <= steps <= diffusion_steps:
        raise UserError(
            f"--steps {steps}: must lie in 1..{diffusion_steps} (the model's --diffusion_steps)"
        )


def whole_clip_frames(stored: dict[str, Any]) -> int:
    """Frames of the clips a run learned from (whole notes): args.json's clip_frames, else the
    longest clip in its mel set's manifest, else its training crop width."""
    if stored.get("clip_frames"):
        return int(stored["clip_frames"])
    manifest = Path(str(stored.get("data_dir") or "")) / "manifest.jsonl"
    if manifest.is_file():
        try:
            return longest_clip(MelSet(manifest.parent, "train"))
        except (UserError, OSError, ValueError):
            pass  # a moved or changed mel set: fall back to the crop width
    return int(stored["crop_width"])


def sample_from_checkpoint(
    model_path: str | os.PathLike, out_dir: str | os.PathLike, num_samples: int, **kwargs: Any
) -> tuple[np.ndarray, list[str]]:
    """mel_sample.py: `_sample_from_checkpoint` while owning `out_dir` (melcore.run_lock)."""
    with lock_run_folder(out_dir, "sampling", flag="--out_dir"):
        return _sample_from_checkpoint(model_path, out_dir, num_samples, **kwargs)


def _sample_from_checkpoint(
    model_path: str | os.PathLike,
    out_dir: str | os.PathLike,
    num_samples: int,
    *,
    batch_size: int = 16,
    use_ddim: bool = True,
    use_ema: bool | None = None,
    seed: int = 0,
    overrides: dict | None = None,
    wav: bool = True,
    griffin_lim: bool = False,
    vocoder_checkpoint: str | None = None,
    progress: bool = True,
    trust: bool = False,
    sampler: str | None = None,
    steps: int | None = None,
    x0_mode: str = "clip",
    guide_path: str | os.PathLike | None = None,
    guidance: float | None = None,
    guidance_interval: float = DEFAULT_GUIDANCE_INTERVAL,
) -> tuple[np.ndarray, list[str]]:
    """mel_sample.py: load (args.json beside the checkpoint), sample, write every output.

    Samples are whole clips by default (`whole_clip_frames`); overrides["crop_width"] picks
    any other width. The model runs on the width rounded up to its size multiple and the
    result is cut back. `sampler` None keeps the timestep_respacing/use_ddim path; otherwise
    see sample_mels (`steps` None: DEFAULT_STEPS, at most the model's diffusion steps). Returns the normalised samples [N, C, H, W] and notes for the user.
    `trust`: --trust-checkpoint, for the diffusion and the vocoder checkpoint.
    `guide_path`, `guidance`, `guidance_interval`: autoguidance (improved_diffusion.guidance) by
    that checkpoint (EMA weights of a run dir's latest, like `model_path`) with that weight
    (None: DEFAULT_GUIDANCE with a guide, 1 without), at the timesteps below that fraction of
    the schedule.
    """
    for name, value in (("--num_samples", num_samples), ("--batch_size", batch_size)):
        if value <= 0:
            raise UserError(f"{name}: must be positive, got {value}")
    ensure_dir(out_dir, "--out_dir")
    stored, _ = read_args(model_path)
    diffusion_steps = int(stored.get("diffusion_steps", 1000))
    if sampler is not None:
        steps = min(DEFAULT_STEPS, diffusion_steps) if steps is None else steps
        check_sampler_flags(sampler, steps, x0_mode, diffusion_steps)
    overrides = dict(overrides or {})
    width = overrides.pop("crop_width", None) or whole_clip_frames(stored)
    if width <= 0:
        raise UserError(f"--crop_width {width}: must be positive")
    if overrides.get("timestep_respacing") is None:
        overrides["timestep_respacing"] = default_respacing(diffusion_steps)
    loaded = load_model(model_path, overrides, use_ema=use_ema, device=dist_util.dev(), trust=trust)
    if guidance is None:
        guidance = DEFAULT_GUIDANCE if guide_path is not None else 1.0
    model, guide = _guided(loaded, guide_path, guidance, guidance_interval, overrides, trust)
    multiple = model.size_multiples[1]
    model_width = -(-width // multiple) * multiple
    shape = (loaded.args["in_channels"], loaded.args["num_mels"], model_width)
    samples = sample_mels(
        model,
        loaded.diffusion,
        num_samples,
        shape,
        batch_size=batch_size,
        use_ddim=use_ddim,
        seed=seed,
        progress=progress,
        device=dist_util.dev(),
        sampler=sampler,
        steps=steps,
        x0_mode=x0_mode,
    )[..., :width]
    out_dir = Path(out_dir)
    n, c, h, w = samples.shape
    # upstream's file: arr_0 holds the normalised samples, NCHW (images were NHWC uint8)
    with atomic_open(out_dir / f"samples_{n}x{c}x{h}x{w}.npz", "wb") as f:
        np.savez(f, arr_0=samples)
    how = loaded.args["timestep_respacing"] or "all steps"
    if sampler is not None:
        how = f"{sampler}, {steps} steps, x0 {x0_mode}"
    if guide is not None:
        how += f", autoguidance {guidance:g} below {guidance_interval:g} of the schedule by {guide.path} (step {guide.step})"
    write_json(
        out_dir / "sample_info.json",
        {
            "checkpoint": str(loaded.path),
            "step": loaded.step,
            "seed": seed,
            "num_samples": n,
            "batch_size": batch_size,
            "frames": w,
            "use_ddim": use_ddim,
            "timestep_respacing": loaded.args["timestep_respacing"],
            **({"sampler": sampler, "steps": steps, "x0": x0_mode} if sampler is not None else {}),
            **(
                {
                    "guide": str(guide.path),
                    "guide_step": guide.step,
                    "guidance": guidance,
                    "guidance_interval": guidance_interval,
                }
                if guide is not None
                else {}
            ),
        },
    )
    notes = [f"{n} samples of {w} frames from {loaded.path} (step {loaded.step}, {how})"]
    notes += write_sample_files(
        out_dir,
        samples,
        loaded.mel_config,
        wav=wav,
        griffin_lim=griffin_lim,
        vocoder_checkpoint=vocoder_checkpoint,
        device=str(dist_util.dev()),
        trust=trust,
    )
    return samples, notes


def _guided(loaded, guide_path, guidance: float, interval: float, overrides: dict, trust: bool):
    """(the model to sample, the guide's Loaded or None): `loaded.model` alone without a guide,
    else a GuidedModel; UserErrors for a bad weight or interval, or a guide of another process
    or mel set."""
    if not (isinstance(guidance, (int, float)) and math.isfinite(guidance) and guidance >= 1.0):
        raise UserError(f"--guidance {guidance}: must be a number >= 1 (1: no guidance)")
    if not 0.0 < interval <= 1.0:
        raise UserError(f"--guidance_interval {interval}: must lie in (0, 1] (1: every step)")
    if guide_path is None:
        if guidance != 1.0:
            raise UserError(f"--guidance {guidance:g} needs --guide_model_path (the worse model to guide by)")
        return loaded.model, None
    sampling = {k: overrides.get(k) for k in ("timestep_respacing", "attention_impl")}
    guide = load_model(guide_path, sampling, device=dist_util.dev(), trust=trust)
    differ = guide_mismatch(loaded.args, guide.args)
    if differ:
        raise UserError(
            f"--guide_model_path {guide_path}: not the same diffusion as {loaded.path} ("
            + "; ".join(differ) + ")"
        )
    require_match(loaded.mel_config, guide.mel_config, str(loaded.path), f"--guide_model_path {guide.path}")
    limit = max_model_timestep(loaded.diffusion, interval)
    return GuidedModel(loaded.model, guide.model, guidance, limit), guide


# -- mel_train.py -----------------------------------------------------------------------------------
def default_log_dir() -> str:
    return time.strftime("runs/%Y%m%d-%H%M%S")


def make_preview(
    args: dict[str, Any], config: MelConfig, log: logger_mod.Logger, log_dir: Path
) -> Callable[[int, torch.nn.Module], None]:
    """TrainLoop's `preview`: sample `sample_count` mels from the EMA model with the default
    DDIM respacing, write npy/png (and TensorBoard images) to samples/<step>/, and WAVs when
    --sample_wav (a failing vocoder is logged, never ends the run)."""
    diffusion = diffusion_from_args(args, default_respacing(args["diffusion_steps"]))
    shape = (args["in_channels"], args["num_mels"], args["crop_width"])
    count = args["sample_count"]

    def preview(step: int, model: torch.nn.Module) -> None:
        device = next(model.parameters()).device
        mels = sample_mels(
            model,
            diffusion,
            count,
            shape,
            batch_size=count,
            use_ddim=True,
            seed=args["seed"],
            progress=False,
            device=device,
        )
        out_dir = log_dir / "samples" / f"{step:06d}"
        tb = log.tensorboard()
        write_sample_files(out_dir, mels, config, wav=False, tensorboard=tb, step=step)
        if not args["sample_wav"]:
            return
        try:
            notes = write_sample_wavs(out_dir, mels, config, tensorboard=tb, step=step)
        except Exception as exc:  # a preview must never end a training run
            notes = [f"no preview WAVs at step {step}: {type(exc).__name__}: {exc}"]
        for note in notes:
            log.log(note)

    return preview


def check_train_args(args: dict[str, Any]) -> dict[str, Any]:
    """A copy of mel_train.py's flags with the log dir chosen (rank 0's) and values checked."""
    args = dict(args)
    if not args["data_dir"]:
        raise UserError("--data_dir: required (a folder made by scripts/prep_mels.py)")
    # Every rank must use rank 0's timestamped folder.
    args["log_dir"] = dist_util.broadcast_object(args["log_dir"] or default_log_dir())
    if args["use_fp16"]:
        args["precision"] = "fp16"
    for name in (
        "batch_size",
        "max_steps",
        "crop_width",
        "num_workers",
        "keep_checkpoints",
        "val_samples",
    ):
        positive = name in ("batch_size", "crop_width")
        if int(args[name]) < (1 if positive else 0):
            raise UserError(
                f"--{name}: must be {'positive' if positive else '>= 0'}, got {args[name]}"
            )
    ckpt.parse_steps(args.get("keep_steps", ""))
    if float(args.get("max_train_seconds", 0)) < 0:
        raise UserError(f"--max_train_seconds: must be >= 0 (0: no time budget), got {args['max_train_seconds']}")
    # "auto" is stored resolved, so args.json says what the run trained in.
    args["precision"] = fast.resolve_precision(args["precision"], dist_util.dev())
    return args


def training_mel_set(args: dict[str, Any], log_dir: Path) -> MelSet:
    """The training split, checked against a stored run (same model flags, same mel config)
    and against --num_mels."""
    stored_config = None
    if (log_dir / ckpt.ARGS_FILE).is_file():
        stored, stored_config = ckpt.read_args(log_dir)
        keys = [*model_and_diffusion_defaults(), "seed"]
        ckpt.require_same_flags(stored, args, keys, f"{log_dir / ckpt.ARGS_FILE}")
    train_set = MelSet(args["data_dir"], "train")
    config = train_set.config
    if stored_config is not None:
        # Resuming on another mel set: its mels must be the ones the model learned.
        require_match(
            stored_config,
            config,
            f"{log_dir / ckpt.ARGS_FILE}",
            f"{args['data_dir']}/mel_config.json",
        )
    if config.num_mels != args["num_mels"]:
        raise UserError(
            f"--num_mels {args['num_mels']}: the mel set {args['data_dir']} has {config.num_mels} mel bins; "
            f"pass --num_mels {config.num_mels}"
        )
    return train_set


def _schedule_sampler(name: str, diffusion):
    try:
        return create_named_schedule_sampler(name, diffusion)
    except NotImplementedError:
        raise UserError(
            f"--schedule_sampler: unknown value {name!r}; use uniform or loss-second-moment"
        ) from None


def build_train_loop(
    args: dict[str, Any], progress: bool = True
) -> tuple[TrainLoop, MelConfig, logger_mod.Logger]:
    """Model, diffusion, data, validation windows, logger and TrainLoop from checked flags.
    Records args["clip_frames"] (the longest training clip: what mel_sample.py samples by
    default) from the training set it opens."""
    log_dir = Path(args["log_dir"])
    train_set = training_mel_set(args, log_dir)
    config = train_set.config
    args["clip_frames"] = longest_clip(train_set)
    torch.manual_seed(args["seed"])  # same initial weights for the same seed
    model, diffusion = create_model_and_diffusion(
        **{k: args[k] for k in model_and_diffusion_defaults()}
    )
    ensure_dir(log_dir, "--log_dir")
    log = logger_mod.configure(log_dir)
    data = load_data(
        data_dir=args["data_dir"],
        batch_size=args["batch_size"],
        crop_width=args["crop_width"],
        class_cond=args["class_cond"],
        num_workers=args["num_workers"],
        seed=args["seed"],
        mel_config=config,
    )
    val_set = MelSet(args["data_dir"], "valid")
    val_data = (
        melset_windows(val_set, args["crop_width"], args["val_samples"]) if len(val_set) else None
    )
    log.log(
        f"training in {log_dir}: {sum(p.numel() for p in model.parameters()):,} parameters, "
        f"{len(train_set)} training clips, {dist_util.get_world_size()} process(es)"
    )
    loop_flags = (
        "batch_size",
        "microbatch",
        "lr",
        "ema_rate",
        "log_interval",
        "save_interval",
        "resume_checkpoint",
        "precision",
        "weight_decay",
        "lr_anneal_steps",
        "max_steps",
        "grad_clip",
        "seed",
        "keep_checkpoints",
        "keep_steps",
        "max_bad_steps",
        "val_interval",
        "sample_interval",
        "lr_warmup_steps",
        "ema_warmup",
        "max_train_seconds",
    )
    loop = TrainLoop(
        model=model,
        diffusion=diffusion,
        data=data,
        **{k: args[k] for k in loop_flags},
        schedule_sampler=_schedule_sampler(args["schedule_sampler"], diffusion),
        log_dir=str(log_dir),
        val_data=val_data,
        preview=make_preview(args, config, log, log_dir),
        logger=log,
        progress=progress,
        trust_checkpoint=bool(args.get("trust_checkpoint", False)),
    )
    log.log(f"step mode: {loop.speed_mode.describe()} (--precision {args['precision']})")
    return loop, config, log


def train_from_args(args: dict[str, Any], progress: bool = True) -> TrainLoop:
    """Everything mel_train.py does after parsing flags; resumes when log_dir has checkpoints."""
    dist_util.setup_dist()
    args = check_train_args(args)
    # One owner per run folder: rank 0 locks --log_dir, the other ranks wait for its answer.
    with lock_run_folder(args["log_dir"], "diffusion training", flag="--log_dir"):
        loop, config, log = build_train_loop(args, progress)
        # After TrainLoop has loaded any checkpoint: a resume that fails leaves args.json as it was.
        if dist_util.is_main():
            ckpt.write_args(Path(args["log_dir"]), args, config)
        try:
            with dist_util.stop_on_dead_rank():  # a dead rank: one line, not a hang
                loop.run_loop()
        finally:
            log.close()
    return loop
