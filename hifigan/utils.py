"""HiFi-GAN's small helpers: weight init, conv padding, checkpoint files.

Checkpoints are read with melcore.checkpoint_io.load_checkpoint (safe by default).

Unlike the official utils.py this module does not import matplotlib (spectrogram figures
live in hifigan.train, imported lazily there), so loading a vocoder stays light.
"""

from __future__ import annotations

import glob
import os
from typing import Any

import torch

from melcore.atomic import torch_save


def init_weights(m: torch.nn.Module, mean: float = 0.0, std: float = 0.01) -> None:
    """Normal(mean, std) init for every conv layer, as the official generator does."""
    if m.__class__.__name__.find("Conv") != -1:
        m.weight.data.normal_(mean, std)


def get_padding(kernel_size: int, dilation: int = 1) -> int:
    """'Same' padding of a stride-1 dilated conv."""
    return int((kernel_size * dilation - dilation) / 2)


def save_checkpoint(filepath: str | os.PathLike, obj: dict[str, Any]) -> None:
    """Write a checkpoint atomically (a crash mid-write never leaves a truncated g_/do_ file)."""
    torch_save(filepath, obj)


def scan_checkpoint(cp_dir: str | os.PathLike, prefix: str) -> str | None:
    """The latest `prefix` + 8-digit checkpoint in `cp_dir` (e.g. g_00050000), or None."""
    cp_list = glob.glob(os.path.join(str(cp_dir), prefix + "?" * 8))
    if not cp_list:
        return None
    return sorted(cp_list)[-1]
