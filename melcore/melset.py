"""Read a prepared mel set (the output of scripts/prep_mels.py).

Layout (DESIGN.md): `mel_config.json`, `manifest.jsonl` (one JSON object per clip: id, split,
source, frames, labels when known), `{train,valid,test}/<id>.npy` float32 log-mel
[num_mels, frames]. Everything that reads prepared mels goes through MelSet.

Optionally (`prep_mels.py --pack`) each split also has `packed/{split}.npy`, one array
[num_mels, total_frames] in Fortran order (a clip's frames are one contiguous block, read
through a memory map), and `packed/{split}.index.json` with ids, offsets and frame counts.
MelSet prefers the packed layout when its index covers every clip of the split with the
manifest's frame counts, and falls back to the per-file layout otherwise.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from melcore.errors import UserError
from melcore.mel_config import MelConfig
from melcore.mel_io import check_mel

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


def source_roots(
    mel_dir: str | os.PathLike, audio_root: str | os.PathLike | None = None
) -> list[Path]:
    """Folders a manifest's relative `source` paths may be under, most specific first:
    the caller's `audio_root`, the input folder prep_mels.py recorded, the mel set, the cwd."""
    mel_dir = Path(mel_dir)
    roots = [Path(audio_root)] if audio_root else []
    try:
        recorded = json.loads((mel_dir / "stats.json").read_text()).get("source_root")
    except (OSError, ValueError, AttributeError):
        recorded = None
    if recorded:
        roots.append(Path(recorded))
    return roots + [mel_dir, Path.cwd()]


def resolve_source(source: str, roots: list[Path]) -> Path | None:
    """The existing file a manifest `source` names, or None."""
    p = Path(source)
    if p.is_absolute():
        return p if p.is_file() else None
    for root in roots:
        if (root / p).is_file():
            return root / p
    return None


class MelSet:
    """The clips of one prepared mel set, optionally restricted to one split."""

    def __init__(
        self, root: str | os.PathLike, split: str | None = None, prefer_packed: bool = True
    ):
        self.root = Path(root)
        if not self.root.is_dir():
            raise UserError(f"{self.root}: mel set folder does not exist")
        if split is not None and split not in SPLITS:
            raise UserError(f"unknown split {split!r}; choose one of {SPLITS}")
        self.config = MelConfig.load(self.root / "mel_config.json")
        entries = read_manifest(self.root / "manifest.jsonl")
        self.split = split
        self.entries = [e for e in entries if split is None or e["split"] == split]
        # split -> {id: (offset, frames)} for splits served from packed/; arrays open lazily
        # (a memory map per process, so forked data-loader workers each map their own).
        self._pack_index: dict[str, dict[str, tuple[int, int]]] = {}
        self._pack_arrays: dict[str, np.ndarray] = {}
        if prefer_packed:
            for s in sorted({e["split"] for e in self.entries}):
                index = self._read_pack_index(s)
                if index is not None:
                    self._pack_index[s] = index

    @property
    def layout(self) -> str:
        """'packed', 'files' or 'mixed' (some splits packed)."""
        splits = {e["split"] for e in self.entries}
        if splits and splits <= set(self._pack_index):
            return "packed"
        return "mixed" if self._pack_index else "files"

    def _read_pack_index(self, split: str) -> dict[str, tuple[int, int]] | None:
        path = self.root / "packed" / f"{split}.index.json"
        if not (path.is_file() and path.with_name(f"{split}.npy").is_file()):
            return None
        try:
            data = json.loads(path.read_text())
            index = {
                i: (int(o), int(n)) for i, o, n in zip(data["ids"], data["offsets"], data["frames"])
            }
            if int(data["num_mels"]) != self.config.num_mels:
                return None
        except (OSError, ValueError, KeyError, TypeError):
            return None
        # A pack older than the manifest (a later run added clips) is not used.
        for e in self.entries:
            if e["split"] == split and index.get(e["id"], (0, -1))[1] != e["frames"]:
                return None
        return index

    def _pack_array(self, split: str) -> np.ndarray:
        if split not in self._pack_arrays:
            path = self.root / "packed" / f"{split}.npy"
            try:
                arr = np.load(path, mmap_mode="r", allow_pickle=False)
            except (OSError, ValueError) as exc:
                raise UserError(
                    f"{path}: unreadable packed mels ({exc}); rerun prep_mels.py --pack"
                ) from None
            if arr.ndim != 2 or arr.shape[0] != self.config.num_mels:
                raise UserError(
                    f"{path}: packed array has shape {arr.shape}; rerun prep_mels.py --pack"
                )
            self._pack_arrays[split] = arr
        return self._pack_arrays[split]

    def __len__(self) -> int:
        return len(self.entries)

    @property
    def ids(self) -> list[str]:
        return [e["id"] for e in self.entries]

    def path(self, index: int) -> Path:
        e = self.entries[index]
        return self.root / e["split"] / f"{e['id']}.npy"

    def source_path(self, index: int, audio_root: str | os.PathLike | None = None) -> Path | None:
        """The clip's source audio file (see source_roots), or None when it cannot be found."""
        return resolve_source(self.entries[index]["source"], source_roots(self.root, audio_root))

    def load(self, index: int) -> np.ndarray:
        """The clip's float32 log-mel [num_mels, frames]; a bad file is a UserError naming it."""
        e = self.entries[index]
        if e["split"] in self._pack_index:
            offset, frames = self._pack_index[e["split"]][e["id"]]
            mel = np.ascontiguousarray(self._pack_array(e["split"])[:, offset : offset + frames])
            return check_mel(
                mel, self.config, f"{self.root}/packed/{e['split']}.npy (clip {e['id']})"
            )
        path = self.path(index)
        try:
            mel = np.load(path, allow_pickle=False)
        except (OSError, ValueError, EOFError) as exc:
            raise UserError(f"{path}: unreadable mel file ({exc})") from None
        # The one mel check (vocode.py and evaluation use it too): dtype, shape, empty, NaN/Inf.
        return check_mel(mel, self.config, str(path))
