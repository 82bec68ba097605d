"""Tiny prepared mel sets for tests, written in the DESIGN.md layout (no prep code needed)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from hifigan.mel_config import MelConfig


def tiny_config(num_mels: int = 16) -> MelConfig:
    return MelConfig(num_mels=num_mels, preset="16k", sampling_rate=16000)


def make_melset(
    root: Path,
    frames: dict[str, list[int]] | None = None,
    num_mels: int = 16,
    seed: int = 0,
    config: MelConfig | None = None,
) -> Path:
    """Clips with smooth, structured log-mels (values in [-11, 2]) per split; returns root."""
    frames = frames or {"train": [40, 24, 33, 50], "valid": [32, 20], "test": [32]}
    config = config or tiny_config(num_mels)
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    lines = []
    for split, lengths in frames.items():
        (root / split).mkdir(exist_ok=True)
        for i, n in enumerate(lengths):
            cid = f"{split}_{i:03d}"
            bins = np.linspace(0, 1, config.num_mels)[:, None]
            t = np.arange(n)[None, :]
            mel = -4.5 + 5.0 * np.cos(2 * np.pi * (bins * (1 + i % 3) + t / (8 + i))) * (1 - bins)
            mel = mel + 0.3 * rng.standard_normal(mel.shape)
            np.save(root / split / f"{cid}.npy", np.clip(mel, -11, 2).astype(np.float32))
            lines.append({"id": cid, "split": split, "source": f"{cid}.wav", "frames": n,
                          "instrument_family": i % 3})
    (root / "manifest.jsonl").write_text("".join(json.dumps(e) + "\n" for e in lines))
    (root / "mel_config.json").write_text(config.to_json())
    return root
