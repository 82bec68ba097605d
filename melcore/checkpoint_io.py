"""Safe checkpoint loading: torch.load(weights_only=True) unless the caller trusts the file.

Trust is an argument of every load (`trust=args.trust_checkpoint`), never a process-wide
setting: the `--trust-checkpoint` flag only sets `args.trust_checkpoint`.
"""

from __future__ import annotations

import argparse
import io
import os
from typing import Any

import torch

from melcore.errors import UserError

# The only way to let a checkpoint unpickle arbitrary Python objects.
TRUST_FLAG = "--trust-checkpoint"


def add_trust_flag(parser: argparse.ArgumentParser) -> None:
    """Give a script that loads checkpoints the --trust-checkpoint flag (once)."""
    if any(TRUST_FLAG in a.option_strings for a in parser._actions):
        return
    parser.add_argument(
        TRUST_FLAG,
        dest="trust_checkpoint",
        action="store_true",
        default=False,
        help="allow checkpoints that need full unpickling (can run code: only for files you trust)",
    )


def load_checkpoint(
    filepath: str | os.PathLike | io.BytesIO,
    device: str | torch.device = "cpu",
    source: str | os.PathLike | None = None,
    trust: bool = False,
) -> Any:
    """The one checkpoint loader: torch.load(weights_only=not trust).

    `filepath` may be an in-memory buffer (`source` then names the file in messages). A
    truncated or foreign file, or one whose pickle needs code (without `trust`), is a
    one-line UserError.
    """
    name = str(source if source is not None else filepath)
    if not isinstance(filepath, io.BytesIO) and not os.path.isfile(filepath):
        raise UserError(f"{name}: checkpoint file does not exist")
    try:
        return torch.load(filepath, map_location=device, weights_only=not trust)
    except Exception as exc:  # torch raises many types for truncated or foreign files
        text = str(exc)
        if not trust and "Unsupported global" in text:
            what = (
                text.split("Unsupported global:", 1)[1].split(" was not")[0].strip()
                if "Unsupported global:" in text
                else "?"
            )
            raise UserError(
                f"{name}: holds Python objects beyond tensors ({what}) and unpickling them can run "
                f"code; if you trust where the file came from, rerun with {TRUST_FLAG}"
            ) from None
        first = next((line.strip() for line in text.splitlines() if line.strip()), "")
        raise UserError(
            f"{name}: not a readable torch checkpoint ({type(exc).__name__}{': ' + first[:160] if first else ''}); "
            "it may be truncated or another kind of file"
        ) from None


def half_floats(state: dict) -> dict:
    """A state_dict with every floating tensor in float16 (shipped weights: half the bytes);
    load_state_dict casts them back to the model's dtype."""
    return {k: v.half() if v.is_floating_point() else v for k, v in state.items()}
