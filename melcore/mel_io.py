"""Read log-mels to vocode: `.npy` [num_mels, T] files and upstream-style `.npz` `arr_0` batches.

`.npy` holds a raw log-mel (the mel-set format); `.npz` holds what improved-diffusion's sampler
writes: `arr_0` of normalised mels in [-1, 1], [N, 1, num_mels, T] or [N, num_mels, T], which is
mapped back to log-mel with the mel config's range.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from melcore.errors import UserError
from melcore.mel_config import MelConfig


def check_mel(mel: np.ndarray, config: MelConfig, source: str) -> np.ndarray:
    """A float log-mel [num_mels, T>0] with finite values, as float32; else a UserError."""
    if not np.issubdtype(mel.dtype, np.floating):
        raise UserError(f"{source}: mel has dtype {mel.dtype}, expected float32 log-mel")
    if mel.ndim != 2 or mel.shape[0] != config.num_mels:
        raise UserError(
            f"{source}: mel has shape {tuple(mel.shape)}, expected ({config.num_mels}, frames)"
        )
    if mel.shape[1] == 0:
        raise UserError(f"{source}: mel is empty (0 frames)")
    if not np.all(np.isfinite(mel)):
        raise UserError(f"{source}: mel contains NaN or Inf")
    return mel.astype(np.float32, copy=False)


def read_mel_file(path: str | os.PathLike, config: MelConfig) -> list[tuple[str, np.ndarray]]:
    """(name, log-mel) pairs in one file: one for `.npy`, one per item for `.npz`."""
    path = Path(path)
    try:
        if path.suffix == ".npy":
            return [(path.stem, check_mel(np.load(path, allow_pickle=False), config, str(path)))]
        with np.load(path, allow_pickle=False) as z:
            if "arr_0" not in z.files:
                raise UserError(f"{path}: npz has no arr_0 (keys {z.files})")
            arr = z["arr_0"]
    except (OSError, ValueError, EOFError) as exc:
        raise UserError(f"{path}: unreadable mel file ({exc})") from None
    if arr.ndim == 4 and arr.shape[1] == 1:
        arr = arr[:, 0]
    if arr.ndim != 3:
        raise UserError(
            f"{path}: arr_0 has shape {list(arr.shape)}, expected [N, 1, {config.num_mels}, T] or [N, {config.num_mels}, T]"
        )
    if not np.issubdtype(arr.dtype, np.floating):
        raise UserError(f"{path}: arr_0 has dtype {arr.dtype}, expected normalised float mels")
    out = []
    for i, item in enumerate(arr):
        mel = check_mel(item, config, f"{path}[{i}]")
        out.append((f"{path.stem}_{i:04d}", config.denormalize(mel).astype(np.float32)))
    return out


def read_mel_dir(input_dir: str | os.PathLike, config: MelConfig) -> list[tuple[str, np.ndarray]]:
    """Every `.npy`/`.npz` directly in `input_dir`, sorted by name."""
    input_dir = Path(input_dir)
    if not input_dir.is_dir():
        raise UserError(f"--input_dir {input_dir}: no such folder")
    files = sorted(p for p in input_dir.iterdir() if p.suffix in (".npy", ".npz") and p.is_file())
    if not files:
        raise UserError(f"--input_dir {input_dir}: no .npy or .npz mel files")
    items = [item for f in files for item in read_mel_file(f, config)]
    names = [n for n, _ in items]
    if len(set(names)) != len(names):
        raise UserError(f"--input_dir {input_dir}: two inputs map to the same output name")
    return items
