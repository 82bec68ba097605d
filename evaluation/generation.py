"""Generation beyond sampling: DDIM inversion + slerp interpolation, variations, inpainting.

All functions take a model and a (possibly respaced) diffusion and normalised mels
[B, 1, num_mels, width] in [-1, 1]; timesteps are indices of that diffusion. The stepping
itself is the diffusion's own (`ddim_reverse_sample`, `ddim_sample_loop`, `p_sample`,
`q_sample`); here are only the loops that start, stop or condition it differently.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from melcore.errors import UserError
from melcore.mel_config import MelConfig


def slerp(a: torch.Tensor, b: torch.Tensor, alpha: float) -> torch.Tensor:
    """Spherical interpolation per example (flattened), falling back to lerp when parallel.

    Gaussian latents have norm ~ sqrt(dim); lerp would shrink the midpoint's norm by up to
    sqrt(2), which the decoder sees as a lower-noise image, so slerp keeps it on the shell.
    """
    fa, fb = a.reshape(len(a), -1).double(), b.reshape(len(b), -1).double()
    cos = (fa * fb).sum(1) / (fa.norm(dim=1) * fb.norm(dim=1)).clamp_min(1e-12)
    theta = torch.arccos(cos.clamp(-1.0, 1.0))
    sin = torch.sin(theta)
    out = torch.empty_like(fa)
    for i in range(len(fa)):
        if sin[i] < 1e-6:
            out[i] = (1 - alpha) * fa[i] + alpha * fb[i]
        else:
            w0 = math.sin((1 - alpha) * float(theta[i])) / float(sin[i])
            w1 = math.sin(alpha * float(theta[i])) / float(sin[i])
            out[i] = w0 * fa[i] + w1 * fb[i]
    return out.reshape(a.shape).to(a.dtype)


@torch.no_grad()
def ddim_invert(
    model, diffusion, x0: torch.Tensor, clip_denoised: bool = False, progress: bool = False
) -> torch.Tensor:
    """x_0 -> x_{T-1} (the latent ddim_sample_loop starts from) along the deterministic DDIM ODE.

    The step at t maps x_t to x_{t+1}; stepping past T-1 would land on alpha_bar = 0, where
    the latent is the model's eps alone and the input is forgotten, so the loop stops there.

    No clipping by default: clipping x_0 predictions breaks the symmetry between the encoder
    and the decoder, so a round trip would not come back to x_0."""
    x = x0
    steps = range(diffusion.num_timesteps - 1)
    for i in tqdm(steps, desc="ddim invert", leave=False, disable=not progress):
        t = torch.full((len(x),), i, dtype=torch.long, device=x.device)
        x = diffusion.ddim_reverse_sample(model, x, t, clip_denoised=clip_denoised)["sample"]
    return x


@torch.no_grad()
def ddim_decode(
    model, diffusion, x_t: torch.Tensor, clip_denoised: bool = False, progress: bool = False
) -> torch.Tensor:
    """x_T -> x_0 with deterministic DDIM (the inverse of ddim_invert); output clipped to [-1, 1]."""
    x = diffusion.ddim_sample_loop(
        model, tuple(x_t.shape), noise=x_t, clip_denoised=clip_denoised, device=x_t.device, progress=progress
    )
    return x.clamp(-1.0, 1.0)


@torch.no_grad()
def interpolate(
    model, diffusion, a: torch.Tensor, b: torch.Tensor, steps: int, progress: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """Invert `a` and `b` ([1, C, H, W] each), slerp the latents at `steps` points, decode.

    Returns (mels [steps, C, H, W], alphas [steps]); the ends reconstruct a and b.
    """
    if steps < 2:
        raise UserError(f"--steps: need at least 2 (the two ends), got {steps}")
    if a.shape != b.shape:
        raise UserError(f"a and b differ in shape: {tuple(a.shape)} vs {tuple(b.shape)}")
    za, zb = ddim_invert(model, diffusion, torch.cat([a, b]), progress=progress).chunk(2)
    alphas = torch.linspace(0, 1, steps)
    z = torch.cat([slerp(za, zb, float(al)) for al in alphas])
    return ddim_decode(model, diffusion, z, progress=progress), alphas


@torch.no_grad()
def denoise_from(
    model, diffusion, x_t: torch.Tensor, t_start: int, known: torch.Tensor | None = None,
    mask: torch.Tensor | None = None, progress: bool = False,
) -> torch.Tensor:
    """Ancestral sampling from step `t_start` down to 0; where `mask` is 1 the sample is
    replaced by q_sample(known, t) before every step (the replacement method of inpainting)."""
    x = x_t
    for i in tqdm(range(t_start, -1, -1), desc="denoise", leave=False, disable=not progress):
        t = torch.full((len(x),), i, dtype=torch.long, device=x.device)
        if known is not None:
            x = mask * diffusion.q_sample(known, t) + (1 - mask) * x
        x = diffusion.p_sample(model, x, t, clip_denoised=True)["sample"]
    if known is not None:
        x = mask * known + (1 - mask) * x
    return x


def variations(
    model, diffusion, x0: torch.Tensor, strength: float, n: int = 4, seed: int = 0, progress: bool = False
) -> torch.Tensor:
    """`n` variations of one mel [1, C, H, W]: noise it to `strength` (0..1 of the chain), denoise."""
    if not 0.0 < strength <= 1.0:
        raise UserError(f"--strength: must be in (0, 1], got {strength}")
    torch.manual_seed(seed)
    t_start = max(0, min(diffusion.num_timesteps - 1, round(strength * diffusion.num_timesteps) - 1))
    x = x0.expand(n, *x0.shape[1:]).contiguous()
    t = torch.full((n,), t_start, dtype=torch.long, device=x.device)
    return denoise_from(model, diffusion, diffusion.q_sample(x, t), t_start, progress=progress)


def frame_mask(shape: tuple[int, ...], start: int, stop: int) -> torch.Tensor:
    """1 on frames [start, stop) (the known part), 0 elsewhere; shape [B, C, H, W]."""
    width = shape[-1]
    if not 0 <= start < stop <= width:
        raise UserError(f"known frames [{start}, {stop}) do not fit a width of {width}")
    m = torch.zeros(shape)
    m[..., start:stop] = 1.0
    return m


def inpaint(
    model, diffusion, known: torch.Tensor, mask: torch.Tensor, n: int = 1, seed: int = 0, progress: bool = False
) -> torch.Tensor:
    """Keep `known` where mask is 1, generate the rest ([1, C, H, W] in, [n, C, H, W] out)."""
    torch.manual_seed(seed)
    known = known.expand(n, *known.shape[1:]).contiguous()
    mask = mask.expand(n, *mask.shape[1:]).to(known)
    x = torch.randn_like(known)
    return denoise_from(model, diffusion, x, diffusion.num_timesteps - 1, known, mask, progress)


def continuation(
    model, diffusion, known: torch.Tensor, keep_frames: int, n: int = 1, seed: int = 0, progress: bool = False
) -> torch.Tensor:
    """Keep the first `keep_frames` frames and generate what follows."""
    mask = frame_mask(tuple(known.shape), 0, keep_frames)
    return inpaint(model, diffusion, known, mask, n, seed, progress)


# -- file edges ------------------------------------------------------------------------------
def pick_endpoints(melset_root: str | os.PathLike, split: str = "test",
                   min_semitones: int = 7) -> tuple[Path, Path]:
    """Two clips worth interpolating between: different instrument_family and pitches at least
    `min_semitones` apart. Deterministic: the first such pair in manifest-id order, from
    `split`, else (a small set, e.g. one test instrument) from the other splits in the order
    valid, train."""
    from melcore.melset import read_manifest

    root = Path(melset_root)
    manifest = read_manifest(root / "manifest.jsonl")
    for name in dict.fromkeys((split, "valid", "train")):
        entries = sorted((e for e in manifest if e.get("split") == name), key=lambda e: e["id"])
        for i, a in enumerate(entries):
            for b in entries[i + 1:]:
                if (a.get("instrument_family") != b.get("instrument_family")
                        and abs(int(a.get("pitch", 0)) - int(b.get("pitch", 0))) >= min_semitones):
                    if name != split:
                        print(f"note: no such pair in the {split} split; interpolating between {name} clips")
                    return root / name / f"{a['id']}.npy", root / name / f"{b['id']}.npy"
    raise UserError(f"{root}: no two clips differ in instrument_family and by {min_semitones}+ "
                    "semitones; pass --a and --b")


def load_mel_input(path: str | os.PathLike, config, width: int) -> torch.Tensor:
    """A log-mel .npy [num_mels, frames] -> normalised [1, 1, num_mels, width] (first `width`
    frames; shorter ones padded with the log floor)."""
    from improved_diffusion.image_datasets import fit_width, normalize_clip

    path = Path(path)
    try:
        mel = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise UserError(f"{path}: unreadable mel .npy ({exc})") from None
    if mel.ndim == 3 and mel.shape[0] == 1:
        mel = mel[0]
    if mel.ndim != 2 or mel.shape[0] != config.num_mels or not np.all(np.isfinite(mel)):
        raise UserError(f"{path}: expected a finite log-mel [{config.num_mels}, frames], got shape {mel.shape}")
    x = normalize_clip(fit_width(mel.astype(np.float32), width), config)
    return torch.from_numpy(x)[None, None]


def mel_grid_png(rows: list[list[np.ndarray]], path: str | os.PathLike, titles: list[str] | None = None,
                 row_labels: list[str] | None = None, config: MelConfig | None = None,
                 cell_labels: list[list[str]] | None = None) -> Path:
    """A grid of log-mel images (rows x columns) as one PNG (matplotlib Agg), coloured over
    the mel config's normalisation range (mel_min..mel_max; the default config's without one);
    `cell_labels[i][j]`, when given, is written under cell (i, j)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from melcore.atomic import save_figure

    config = config or MelConfig()
    nr, nc = len(rows), max(len(r) for r in rows)
    fig, axes = plt.subplots(nr, nc, figsize=(1.6 * nc + 0.4, 1.6 * nr + 0.3), squeeze=False)
    for i, row in enumerate(rows):
        for j in range(nc):
            ax = axes[i][j]
            ax.set_xticks([])
            ax.set_yticks([])
            if j < len(row):
                ax.imshow(row[j], origin="lower", aspect="auto", cmap="magma", vmin=config.mel_min,
                          vmax=config.mel_max)
            else:
                ax.axis("off")
            if cell_labels and i < len(cell_labels) and j < len(cell_labels[i]):
                ax.set_xlabel(cell_labels[i][j], fontsize=6)
            if titles and i == 0 and j < len(titles):
                ax.set_title(titles[j], fontsize=7)
        if row_labels:
            axes[i][0].set_ylabel(row_labels[i], fontsize=7)
    fig.tight_layout()
    return save_figure(fig, path, dpi=90)


def write_outputs(
    mels: torch.Tensor, names: list[str], out_dir: str | os.PathLike, config, vocoder=None
) -> list[Path]:
    """Denormalised log-mel .npy (+ WAV when a vocoder is given) per output, mel_config.json beside."""
    from melcore.atomic import save_npy

    out_dir = Path(out_dir)
    logmels = [config.denormalize(m[0].cpu().numpy()).astype(np.float32) for m in mels]
    paths = []
    for name, m in zip(names, logmels):
        save_npy(out_dir / f"{name}.npy", m)
        paths.append(out_dir / f"{name}.npy")
    config.save(out_dir / "mel_config.json")
    if vocoder is not None:
        from hifigan.inference import vocode_batches, write_wavs

        write_wavs(vocode_batches(vocoder, logmels, progress=False), names, out_dir, vocoder.sampling_rate)
    return paths
