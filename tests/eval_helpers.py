"""Tiny synthetic mel sets for the evaluation tests (npy + manifest.jsonl + mel_config.json)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from melcore.atomic import save_npy
from melcore.mel_config import MelConfig

CONFIG = MelConfig()
# A 16-mel config keeps diffusion tests fast (the UNet's cost scales with the mel height).
SMALL = MelConfig(num_mels=16, preset="test16")


def toy_mel(
    pitch: int, family: int, rng: np.random.Generator, frames: int = 80, shift: float = 0.0, num_mels: int = 80
) -> np.ndarray:
    """A 'note': harmonic bands whose lowest bin follows the pitch, brightness by family."""
    m = num_mels
    bins = np.arange(m)[:, None]
    mel = np.full((m, frames), -9.0) + shift
    base = 2 + (pitch - 21) * 0.8 * m / 80
    for h in range(1, 4):
        centre = base * (1 + 0.6 * (h - 1))
        if centre < m:
            mel += (6.0 - family * 1.5 * (h - 1)) * np.exp(-0.5 * ((bins - centre) / 1.2) ** 2)
    env = np.exp(-np.arange(frames) / (40 + 30 * family))[None]
    mel = mel * (0.6 + 0.4 * env) + 0.3 * rng.standard_normal((m, frames))
    return mel.astype(np.float32)


def note_mel(pitch: int, family: int, rng: np.random.Generator, frames: int = 96, num_mels: int = 80) -> np.ndarray:
    """A note that passes evaluation.notecheck: partials at fixed bins (by pitch), an onset, a
    decay (by family) and a release to the log floor at 3/4 of the clip, little jitter."""
    floor = np.log(1e-5)
    bins = np.arange(num_mels)[:, None]
    base = 3 + (pitch - 21) * 0.6 * num_mels / 80
    partials = np.zeros((num_mels, 1))
    for h in range(1, 6):
        centre = base * (1 + 0.5 * (h - 1))
        if centre < num_mels - 1:
            partials += (7.0 - (1.0 + 0.5 * family) * (h - 1)) * np.exp(-0.5 * ((bins - centre) / 0.8) ** 2)
    t = np.arange(frames)[None]
    env = np.minimum(1.0, (t + 1) / 3) * np.exp(-t / (60 + 40 * family))
    mel = -8.0 + partials + 3.0 * np.log(np.maximum(env, 1e-3))
    mel[:, int(0.75 * frames):] = floor
    mel = mel + 0.05 * rng.standard_normal(mel.shape)
    return np.clip(mel, floor, 2.0).astype(np.float32)


def make_melset(
    root: Path,
    n_per_split: dict | None = None,
    pitches=(40, 60, 80),
    families=(0, 2),
    seed: int = 0,
    shift: float = 0.0,
    frames: int = 80,
    config: MelConfig = CONFIG,
    make=toy_mel,
) -> Path:
    n_per_split = n_per_split or {"train": 24, "valid": 12, "test": 12}
    rng = np.random.default_rng(seed)
    root = Path(root)
    config.save(root / "mel_config.json")
    lines = []
    for split, n in n_per_split.items():
        for i in range(n):
            pitch = int(pitches[i % len(pitches)])
            fam = int(families[(i // len(pitches)) % len(families)])
            cid = f"{split}_{i:03d}"
            if make is toy_mel:
                mel = toy_mel(pitch, fam, rng, frames, shift, config.num_mels)
            else:
                mel = make(pitch, fam, rng, frames, config.num_mels)
            save_npy(root / split / f"{cid}.npy", mel)
            lines.append({
                "id": cid, "split": split, "source": f"{cid}.wav", "frames": frames, "pitch": pitch,
                "velocity": 100, "instrument": fam, "instrument_family": fam,
                "instrument_source": fam % 3, "qualities": [0] * 10,
            })
    (root / "manifest.jsonl").write_text("".join(json.dumps(e) + "\n" for e in lines))
    return root


def make_sample_dir(root: Path, mels: list[np.ndarray], config: MelConfig = CONFIG) -> Path:
    """A folder as mel_sample.py writes it: sample_{i:05d}.npy + mel_config.json."""
    root = Path(root)
    config.save(root / "mel_config.json")
    for i, m in enumerate(mels):
        save_npy(root / f"sample_{i:05d}.npy", m.astype(np.float32))
    return root


TINY_FLAGS = dict(
    num_channels=32, num_res_blocks=1, channel_mult="1,1", attention_resolutions="", num_heads=1,
    diffusion_steps=20, noise_schedule="cosine", crop_width=16, learn_sigma=True,
)


def make_tiny_run(run_dir: Path, config: MelConfig = SMALL, step: int = 0, seed: int = 0, **flags) -> Path:
    """A run dir with args.json and one complete (untrained) checkpoint of a tiny UNet."""
    import torch

    from improved_diffusion import checkpoint as ckpt
    from improved_diffusion.script_util import (
        create_model_and_diffusion,
        model_and_diffusion_defaults,
    )

    args = {**model_and_diffusion_defaults(), **TINY_FLAGS, "num_mels": config.num_mels, **flags,
            "ema_rate": "0.9999"}
    torch.manual_seed(seed)
    model, _ = create_model_and_diffusion(**{k: args[k] for k in model_and_diffusion_defaults()})
    run_dir = Path(run_dir)
    ckpt.write_args(run_dir, args, config)
    state = model.state_dict()
    ckpt.save_checkpoint(run_dir, step, state, {0.9999: state}, {"step": step})
    return run_dir


def run_script(name: str, argv: list[str]) -> int:
    """Run scripts/<name>.py's main(argv) in this process (no interpreter start-up); exit code."""
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "scripts" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"_script_{name}", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    try:
        mod.main([str(a) for a in argv])
    except SystemExit as exc:
        return int(exc.code or 0)
    return 0


