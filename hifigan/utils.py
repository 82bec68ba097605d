"""HiFi-GAN's small helpers: weight init, conv padding, checkpoint files.

Unlike the official utils.py this module does not import matplotlib (spectrogram figures
live in hifigan.train, imported lazily there), so loading a vocoder stays light.
"""

from __future__ import annotations

import glob
import os
from typing import Any

import torch

from hifigan.errors import UserError


def init_weights(m: torch.nn.Module, mean: float = 0.0, std: float = 0.01) -> None:
    """Normal(mean, std) init for every conv layer, as the official generator does."""
    if m.__class__.__name__.find("Conv") != -1:
        m.weight.data.normal_(mean, std)


def apply_weight_norm(m: torch.nn.Module) -> None:
    from hifigan.models import weight_norm

    if m.__class__.__name__.find("Conv") != -1:
        weight_norm(m)


def get_padding(kernel_size: int, dilation: int = 1) -> int:
    """'Same' padding of a stride-1 dilated conv."""
    return int((kernel_size * dilation - dilation) / 2)


def load_checkpoint(filepath: str | os.PathLike, device: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint dict (tensors, numbers and plain containers only: weights_only=True)."""
    if not os.path.isfile(filepath):
        raise UserError(f"{filepath}: checkpoint file does not exist")
    try:
        return torch.load(filepath, map_location=device, weights_only=True)
    except Exception as exc:  # torch raises several types for truncated or foreign files
        raise UserError(f"{filepath}: not a readable torch checkpoint ({exc})") from None


def save_checkpoint(filepath: str | os.PathLike, obj: dict[str, Any]) -> None:
    """Write a checkpoint atomically (a crash mid-write never leaves a truncated g_/do_ file)."""
    from hifigan.atomic import torch_save

    torch_save(filepath, obj)


def scan_checkpoint(cp_dir: str | os.PathLike, prefix: str) -> str | None:
    """The latest `prefix` + 8-digit checkpoint in `cp_dir` (e.g. g_00050000), or None."""
    cp_list = glob.glob(os.path.join(str(cp_dir), prefix + "?" * 8))
    if not cp_list:
        return None
    return sorted(cp_list)[-1]
