"""Tiny synthetic mel sets for the evaluation tests (npy + manifest.jsonl + mel_config.json)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from hifigan.atomic import save_npy
from hifigan.mel_config import MelConfig

CONFIG = MelConfig()


def toy_mel(pitch: int, family: int, rng: np.random.Generator, frames: int = 80, shift: float = 0.0) -> np.ndarray:
    """A 'note': harmonic bands whose lowest bin follows the pitch, brightness by family."""
    m = CONFIG.num_mels
    bins = np.arange(m)[:, None]
    mel = np.full((m, frames), -9.0) + shift
    base = 2 + (pitch - 21) * 0.8
    for h in range(1, 4):
        centre = base * (1 + 0.6 * (h - 1))
        if centre < m:
            mel += (6.0 - family * 1.5 * (h - 1)) * np.exp(-0.5 * ((bins - centre) / 1.2) ** 2)
    env = np.exp(-np.arange(frames) / (40 + 30 * family))[None]
    mel = mel * (0.6 + 0.4 * env) + 0.3 * rng.standard_normal((m, frames))
    return mel.astype(np.float32)


def make_melset(
    root: Path,
    n_per_split: dict | None = None,
    pitches=(40, 60, 80),
    families=(0, 2),
    seed: int = 0,
    shift: float = 0.0,
    frames: int = 80,
) -> Path:
    n_per_split = n_per_split or {"train": 24, "valid": 12, "test": 12}
    rng = np.random.default_rng(seed)
    root = Path(root)
    CONFIG.save(root / "mel_config.json")
    lines = []
    for split, n in n_per_split.items():
        for i in range(n):
            pitch = int(pitches[i % len(pitches)])
            fam = int(families[(i // len(pitches)) % len(families)])
            cid = f"{split}_{i:03d}"
            mel = toy_mel(pitch, fam, rng, frames, shift)
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
