"""HiFi-GAN's small helpers: weight init, conv padding, checkpoint files.

Unlike the official utils.py this module does not import matplotlib (spectrogram figures
live in hifigan.train, imported lazily there), so loading a vocoder stays light.
"""

from __future__ import annotations

import argparse
import glob
import io
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


# --trust-checkpoint: the only way to let a checkpoint unpickle arbitrary Python objects.
TRUST_FLAG = "--trust-checkpoint"
_trusted = False


class _TrustAction(argparse.Action):
    def __call__(self, parser, namespace, values, option_string=None):
        set_trust_checkpoints(True)
        setattr(namespace, self.dest, True)


def add_trust_flag(parser: argparse.ArgumentParser) -> None:
    """Give a script that loads checkpoints the --trust-checkpoint flag (once)."""
    if any(TRUST_FLAG in a.option_strings for a in parser._actions):
        return
    parser.add_argument(
        TRUST_FLAG, dest="trust_checkpoint", nargs=0, action=_TrustAction, default=False,
        help="allow checkpoints that need full unpickling (can run code: only for files you trust)",
    )


def set_trust_checkpoints(trust: bool) -> None:
    global _trusted
    _trusted = bool(trust)


def load_checkpoint(
    filepath: str | os.PathLike | io.BytesIO,
    device: str | torch.device = "cpu",
    source: str | os.PathLike | None = None,
) -> Any:
    """The one checkpoint loader: torch.load(weights_only=True) unless --trust-checkpoint was given.

    `filepath` may be an in-memory buffer (`source` then names the file in messages). A
    truncated or foreign file, or one whose pickle needs code, is a one-line UserError.
    """
    name = str(source if source is not None else filepath)
    if not isinstance(filepath, io.BytesIO) and not os.path.isfile(filepath):
        raise UserError(f"{name}: checkpoint file does not exist")
    try:
        return torch.load(filepath, map_location=device, weights_only=not _trusted)
    except Exception as exc:  # torch raises many types for truncated or foreign files
        text = str(exc)
        if not _trusted and "Unsupported global" in text:
            glob = text.split("Unsupported global:", 1)[1].split(" was not")[0].strip() if "Unsupported global:" in text else "?"
            raise UserError(
                f"{name}: holds Python objects beyond tensors ({glob}) and unpickling them can run "
                f"code; if you trust where the file came from, rerun with {TRUST_FLAG}"
            ) from None
        first = next((line.strip() for line in text.splitlines() if line.strip()), "")
        raise UserError(
            f"{name}: not a readable torch checkpoint ({type(exc).__name__}{': ' + first[:160] if first else ''}); "
            "it may be truncated or another kind of file"
        ) from None


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
