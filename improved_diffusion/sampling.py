"""Draw mel spectrograms from a trained model and write them as npy/png/npz/wav.

`sample_mels` is the library entry point (mel_sample.py, training-time previews and the
evaluation helper call it); `write_sample_files` does the file edge.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from hifigan.atomic import atomic_open, ensure_dir, save_npy, write_json
from hifigan.mel_config import MelConfig
from improved_diffusion import fast
from improved_diffusion.samplers import run_sampler


def sample_mels(
    model: torch.nn.Module,
    diffusion,
    n: int,
    shape: tuple[int, int, int],
    batch_size: int = 16,
    use_ddim: bool = True,
    seed: int = 0,
    progress: bool = True,
    device: torch.device | str | None = None,
    clip_denoised: bool = True,
    sampler: str | None = None,
    steps: int = 50,
    x0_mode: str = "clip",
) -> np.ndarray:
    """`n` samples, float32 [n, C, H, W] in [-1, 1] (normalised log-mel; see MelConfig).

    Batch b starts from noise seeded by (seed, b), so a given seed gives the same samples
    for the same batch size. Class-conditional models get random labels from the same seed.
    Without `sampler`, `diffusion`'s own steps are run (DDIM, or ancestral when not
    use_ddim, clipping x0 when clip_denoised); with `sampler` ("ddim", "dpmpp2m",
    "ancestral"; see samplers.run_sampler), `steps` model calls on `diffusion`'s base
    process with `x0_mode` ("clip", "dynamic", "none"), whatever respacing it carries.
    """
    from tqdm.auto import tqdm

    device = torch.device(device) if device is not None else next(model.parameters()).device
    loop = diffusion.ddim_sample_loop if use_ddim else diffusion.p_sample_loop
    num_classes = getattr(model, "num_classes", None)
    out = []
    was_training = model.training
    model.eval()
    mode = fast.prepare_for_sampling(model, device)  # timed by benchmarks/bench_sample.py
    batches = range(0, n, batch_size)
    bar = tqdm(total=n, unit="sample", desc="sampling", disable=not progress)
    # fork_rng: previews during training must not disturb the trainer's generators.
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        for b, start in enumerate(batches):
            count = min(batch_size, n - start)
            gen = torch.Generator().manual_seed(int(np.random.SeedSequence([seed, b]).generate_state(1)[0]))
            noise = torch.randn((count, *shape), generator=gen).to(device)
            torch.manual_seed(int(torch.randint(0, 2**31 - 1, (1,), generator=gen)))
            kwargs = {}
            if num_classes:
                kwargs["y"] = torch.randint(0, num_classes, (count,), generator=gen).to(device)
            with fast.inference(mode, device):
                if sampler is None:
                    x = loop(model, (count, *shape), noise=noise, clip_denoised=clip_denoised, model_kwargs=kwargs, device=device)
                else:
                    x = run_sampler(sampler, model, diffusion, (count, *shape), noise, steps, x0_mode, kwargs, device)
            out.append(x.clamp(-1, 1).float().cpu().numpy())
            bar.update(count)
    bar.close()
    model.train(was_training)
    return np.concatenate(out, axis=0).astype(np.float32)


def spectrogram_rgb(log_mel: np.ndarray, config: MelConfig) -> np.ndarray:
    """uint8 [H, W, 3] image of a log-mel (low bins at the bottom), fixed colour range."""
    from matplotlib import colormaps

    x = (np.clip(config.normalize(log_mel), -1, 1) + 1) / 2
    rgb = colormaps["magma"](x[::-1])[..., :3]
    return (rgb * 255).astype(np.uint8)


def save_spectrogram_png(path: str | os.PathLike, log_mel: np.ndarray, config: MelConfig, title: str = "") -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(max(3.0, log_mel.shape[1] / 16), 3.0), dpi=100)
    im = ax.imshow(log_mel, origin="lower", aspect="auto", cmap="magma", vmin=config.mel_min, vmax=config.mel_max)
    ax.set_xlabel(f"frame (hop {config.hop_size} @ {config.sampling_rate} Hz)")
    ax.set_ylabel("mel bin")
    ax.set_title(title, fontsize=9)
    fig.colorbar(im, ax=ax, label="log-mel")
    fig.tight_layout()
    with atomic_open(path, "wb") as f:
        fig.savefig(f, format="png")
    plt.close(fig)


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
) -> list[str]:
    """Per sample: sample_{i:05d}.npy (denormalised log-mel [num_mels, W]), .png and .wav.

    Also writes mel_config.json (and vocoder.json when WAVs are written). Returns notes
    for the user (e.g. which vocoder ran, or why no WAVs were written).
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    config.save(out_dir / "mel_config.json")
    mels = [config.denormalize(s[0]).astype(np.float32) for s in samples]
    names = [f"sample_{start_index + i:05d}" for i in range(len(mels))]
    for name, mel in zip(names, mels):
        save_npy(out_dir / f"{name}.npy", mel)
        save_spectrogram_png(out_dir / f"{name}.png", mel, config, name)
        if tensorboard is not None:
            tensorboard.add_image(f"samples/{name}", spectrogram_rgb(mel, config), step, dataformats="HWC")
    if not wav:
        return []
    return write_sample_wavs(out_dir, samples, config, start_index=start_index, vocoder_checkpoint=vocoder_checkpoint,
                             griffin_lim=griffin_lim, tensorboard=tensorboard, step=step, device=device)


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
) -> list[str]:
    """sample_{i:05d}.wav per sample via hifigan.inference (named *_griffinlim.wav when the
    Griffin-Lim fallback ran) and vocoder.json; returns notes for the user."""
    out_dir = Path(out_dir)
    mels = [config.denormalize(s[0]).astype(np.float32) for s in samples]
    names = [f"sample_{start_index + i:05d}" for i in range(len(mels))]
    try:
        from hifigan.inference import vocode_batches, vocoder_for, write_wavs
    except ImportError:
        return ["no WAVs: hifigan.inference is not available in this tree"]
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the fallback is reported below instead
        vocoder = vocoder_for(config, checkpoint=vocoder_checkpoint, griffin_lim=griffin_lim, device=device)
    audios = vocode_batches(vocoder, mels, progress=False)
    # A Griffin-Lim file is named as such, so nobody mistakes it for the vocoder's quality.
    suffix = "_griffinlim" if vocoder.is_fallback else ""
    write_wavs(audios, [n + suffix for n in names], out_dir, vocoder.sampling_rate)
    write_json(out_dir / "vocoder.json", vocoder.describe())
    if tensorboard is not None:
        for name, y in zip(names, audios):
            tensorboard.add_audio(f"audio/{name}", torch.as_tensor(y)[None], step, sample_rate=vocoder.sampling_rate)
    label = "Griffin-Lim fallback (no matching HiFi-GAN)" if vocoder.is_fallback else vocoder.name
    return [f"WAVs written with {label}"]


def default_respacing(diffusion_steps: int) -> str:
    """DDIM with 50 steps, or every step for shorter chains."""
    return f"ddim{min(50, diffusion_steps)}"


def check_sampler_flags(sampler: str, steps: int, x0_mode: str, diffusion_steps: int) -> None:
    """UserErrors naming --sampler / --steps / --x0 for values run_sampler cannot take."""
    from hifigan.errors import UserError
    from improved_diffusion.samplers import SAMPLERS, X0_MODES

    if sampler not in SAMPLERS:
        raise UserError(f"--sampler: unknown {sampler!r}; choose one of {', '.join(SAMPLERS)}")
    if x0_mode not in X0_MODES:
        raise UserError(f"--x0: unknown {x0_mode!r}; choose one of {', '.join(X0_MODES)}")
    if not 1 <= steps <= diffusion_steps:
        raise UserError(f"--steps {steps}: must lie in 1..{diffusion_steps} (the model's --diffusion_steps)")


def sample_from_checkpoint(
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
    sampler: str | None = None,
    steps: int = 50,
    x0_mode: str = "clip",
) -> tuple[np.ndarray, list[str]]:
    """mel_sample.py: load (args.json beside the checkpoint), sample, write every output.

    `sampler` None keeps the timestep_respacing/use_ddim path; otherwise see sample_mels.
    Returns the normalised samples [N, C, H, W] and notes for the user.
    """
    from hifigan.errors import UserError
    from improved_diffusion import dist_util
    from improved_diffusion.checkpoint import load_model, read_args

    for name, value in (("--num_samples", num_samples), ("--batch_size", batch_size)):
        if value <= 0:
            raise UserError(f"{name}: must be positive, got {value}")
    ensure_dir(out_dir, "--out_dir")
    stored, _ = read_args(model_path)
    if sampler is not None:
        check_sampler_flags(sampler, steps, x0_mode, int(stored.get("diffusion_steps", 1000)))
    overrides = dict(overrides or {})
    if overrides.get("timestep_respacing") is None:
        overrides["timestep_respacing"] = default_respacing(int(stored.get("diffusion_steps", 1000)))
    loaded = load_model(model_path, overrides, use_ema=use_ema, device=dist_util.dev())
    shape = (loaded.args["in_channels"], loaded.args["num_mels"], loaded.args["crop_width"])
    samples = sample_mels(loaded.model, loaded.diffusion, num_samples, shape, batch_size=batch_size,
                          use_ddim=use_ddim, seed=seed, progress=progress, device=dist_util.dev(),
                          sampler=sampler, steps=steps, x0_mode=x0_mode)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    n, c, h, w = samples.shape
    # upstream's file: arr_0 holds the normalised samples, NCHW (images were NHWC uint8)
    with atomic_open(out_dir / f"samples_{n}x{c}x{h}x{w}.npz", "wb") as f:
        np.savez(f, arr_0=samples)
    write_json(out_dir / "sample_info.json", {
        "checkpoint": str(loaded.path), "step": loaded.step, "seed": seed, "num_samples": n,
        "batch_size": batch_size, "use_ddim": use_ddim,
        "timestep_respacing": loaded.args["timestep_respacing"],
        **({"sampler": sampler, "steps": steps, "x0": x0_mode} if sampler is not None else {}),
    })
    how = f"{sampler}, {steps} steps, x0 {x0_mode}" if sampler is not None else loaded.args["timestep_respacing"] or "all steps"
    notes = [f"{n} samples from {loaded.path} (step {loaded.step}, {how})"]
    notes += write_sample_files(out_dir, samples, loaded.mel_config, wav=wav, griffin_lim=griffin_lim,
                                vocoder_checkpoint=vocoder_checkpoint, device=str(dist_util.dev()))
    return samples, notes
