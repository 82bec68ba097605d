"""Read a prepared mel set (the output of scripts/prep_mels.py).

Layout (DESIGN.md): `mel_config.json`, `manifest.jsonl` (one JSON object per clip: id, split,
source, frames, labels when known), `{train,valid,test}/<id>.npy` float32 log-mel
[num_mels, frames]. Everything that reads prepared mels goes through MelSet.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from hifigan.errors import UserError
from hifigan.mel_config import MelConfig

SPLITS = ("train", "valid", "test")


def read_manifest(path: Path) -> list[dict]:
    if not path.is_file():
        raise UserError(f"{path}: missing manifest.jsonl (was this folder made by prep_mels.py?)")
    entries = []
    with open(path) as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                entries.append(json.loads(line))
            except json.JSONDecodeError:
                raise UserError(f"{path}:{lineno}: not valid JSON") from None
    return entries


class MelSet:
    """The clips of one prepared mel set, optionally restricted to one split."""

    def __init__(self, root: str | os.PathLike, split: str | None = None):
        self.root = Path(root)
        if not self.root.is_dir():
            raise UserError(f"{self.root}: mel set folder does not exist")
        if split is not None and split not in SPLITS:
            raise UserError(f"unknown split {split!r}; choose one of {SPLITS}")
        self.config = MelConfig.load(self.root / "mel_config.json")
        entries = read_manifest(self.root / "manifest.jsonl")
        self.split = split
        self.entries = [e for e in entries if split is None or e["split"] == split]

    def __len__(self) -> int:
        return len(self.entries)

    @property
    def ids(self) -> list[str]:
        return [e["id"] for e in self.entries]

    def path(self, index: int) -> Path:
        e = self.entries[index]
        return self.root / e["split"] / f"{e['id']}.npy"

    def load(self, index: int) -> np.ndarray:
        """The clip's float32 log-mel [num_mels, frames]; a bad file is a UserError naming it."""
        path = self.path(index)
        try:
            mel = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise UserError(f"{path}: unreadable mel file ({exc})") from None
        if mel.ndim != 2 or mel.shape[0] != self.config.num_mels or mel.shape[1] == 0:
            raise UserError(
                f"{path}: mel has shape {mel.shape}, expected [{self.config.num_mels}, frames>0]"
            )
        if not np.all(np.isfinite(mel)):
            raise UserError(f"{path}: mel contains NaN or Inf")
        return mel.astype(np.float32, copy=False)
