"""Mel inputs for evaluation: read a folder of generated mels or a prepared set, cut fixed crops.

Generated samples are random crops of `crop_width` frames (that is what the model learns), so
real clips are compared as seeded random crops of the same width; shorter clips are padded
with the log floor, as the training loader does.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from melcore.errors import UserError
from melcore.mel_config import LOG_FLOOR, MelConfig
from melcore.melset import MelSet


@dataclass
class MelCollection:
    """Log-mels [num_mels, frames] (not normalised) with their config and names."""

    mels: list[np.ndarray]
    config: MelConfig
    names: list[str]
    labels: list[dict]
    source: str

    def __len__(self) -> int:
        return len(self.mels)


def _check_mel(mel: np.ndarray, config: MelConfig, path: Path) -> np.ndarray:
    if mel.ndim == 3 and mel.shape[0] == 1:
        mel = mel[0]
    if mel.ndim != 2 or mel.shape[0] != config.num_mels or mel.shape[1] == 0:
        raise UserError(f"{path}: mel has shape {mel.shape}, expected [{config.num_mels}, frames>0]")
    if not np.all(np.isfinite(mel)):
        raise UserError(f"{path}: mel contains NaN or Inf")
    return mel.astype(np.float32, copy=False)


def is_melset(path: str | os.PathLike) -> bool:
    return (Path(path) / "manifest.jsonl").is_file()


def load_melset(root: str | os.PathLike, split: str | None = None) -> MelCollection:
    ms = MelSet(root, split)
    mels = [ms.load(i) for i in range(len(ms))]
    return MelCollection(mels, ms.config, ms.ids, list(ms.entries), f"{root}:{split or 'all'}")


def load_mel_folder(path: str | os.PathLike, limit: int | None = None) -> MelCollection:
    """A folder of mel .npy (as mel_sample.py writes, with mel_config.json) or a prepared set."""
    path = Path(path)
    if not path.is_dir():
        raise UserError(f"{path}: folder of mels does not exist")
    if is_melset(path):
        coll = load_melset(path)
    else:
        config = MelConfig.load(path / "mel_config.json")
        files = sorted(path.glob("*.npy"))
        if limit is not None:
            files = files[:limit]
        mels = []
        for f in files:
            try:
                arr = np.load(f, allow_pickle=False)
            except (OSError, ValueError) as exc:
                raise UserError(f"{f}: unreadable mel file ({exc})") from None
            mels.append(_check_mel(arr, config, f))
        coll = MelCollection(mels, config, [f.stem for f in files], [{} for _ in files], str(path))
    if not coll.mels:
        raise UserError(f"{path}: no mel .npy files found")
    if limit is not None and len(coll) > limit:
        coll = subset(coll, np.arange(limit))
    return coll


def subset(coll: MelCollection, index: np.ndarray) -> MelCollection:
    return MelCollection(
        [coll.mels[i] for i in index],
        coll.config,
        [coll.names[i] for i in index],
        [coll.labels[i] for i in index],
        coll.source,
    )


def crop(mel: np.ndarray, width: int, rng: np.random.Generator) -> np.ndarray:
    """A random `width`-frame window; shorter mels are padded with the log floor at the end."""
    frames = mel.shape[1]
    if frames < width:
        pad = np.full((mel.shape[0], width - frames), LOG_FLOOR, dtype=np.float32)
        return np.concatenate([mel, pad], axis=1)
    start = int(rng.integers(0, frames - width + 1))
    return mel[:, start : start + width]


def fixed_crops(mels: list[np.ndarray], width: int, seed: int = 0) -> np.ndarray:
    """Seeded crops as float32 [N, num_mels, width] log-mel (same seed -> same crops)."""
    rng = np.random.default_rng(seed)
    return np.stack([crop(m, width, rng) for m in mels]).astype(np.float32)


def normalized(crops: np.ndarray, config: MelConfig) -> np.ndarray:
    """Log-mel -> [-1, 1] with the set's range, clipped like the training data."""
    return np.clip(config.normalize(crops), -1.0, 1.0).astype(np.float32)
