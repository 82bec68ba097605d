"""Read a prepared mel set (the output of scripts/prep_mels.py).

Layout (DESIGN.md): `mel_config.json`, `manifest.jsonl` (one JSON object per clip: id, split,
source, frames, labels when known), `{train,valid,test}/<id>.npy` float32 log-mel
[num_mels, frames]. Everything that reads prepared mels goes through MelSet.

Optionally (`prep_mels.py --pack`) each split also has `packed/{split}.npy`, one array
[num_mels, total_frames] in Fortran order (a clip's frames are one contiguous block, read
through a memory map), and `packed/{split}.index.json` with ids, offsets and frame counts.
MelSet prefers the packed layout when its index covers every clip of the split with the
manifest's frame counts, and falls back to the per-file layout otherwise.

Opening scales to hundreds of thousands of clips: every manifest line is parsed once (so a
bad line is still an error at open) but only id, split and frames are kept, in compact
columns; `entries[i]` parses its line again on access. Hundreds of thousands of dicts would cost
~1.5 KB a clip and, being garbage-collected objects, be copied into every forked data-loader
worker as the collector touches them; one bytes object and a few arrays are not.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import overload

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


class ManifestEntries(Sequence):
    """A read-only sequence of manifest entries (dicts) kept as the manifest's text; each access
    parses its line (a new dict every time: changing one changes nothing stored)."""

    def __init__(self, data: str, starts: np.ndarray, ends: np.ndarray):
        self._data, self._starts, self._ends = data, starts, ends

    def __len__(self) -> int:
        return len(self._starts)

    def _parse(self, i: int) -> dict:
        return json.loads(self._data[int(self._starts[i]) : int(self._ends[i])])

    @overload
    def __getitem__(self, index: int) -> dict: ...
    @overload
    def __getitem__(self, index: slice) -> list[dict]: ...
    def __getitem__(self, index):
        if isinstance(index, slice):
            return [self._parse(i) for i in range(*index.indices(len(self)))]
        n = len(self)
        if not -n <= index < n:
            raise IndexError("manifest entry index out of range")
        return self._parse(index % n)

    def __iter__(self) -> Iterator[dict]:
        return (self._parse(i) for i in range(len(self)))

    def __eq__(self, other: object) -> bool:
        return list(self) == list(other) if isinstance(other, Sequence) else NotImplemented


def _frames_of(value: object) -> int:
    # -1: unknown (absent or not a number); readers then load the mel to count its frames.
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        return int(value)
    return -1


def scan_manifest(path: Path) -> tuple[str, np.ndarray, np.ndarray, list[str], list[str], np.ndarray]:
    """(text, line starts, line ends, ids, splits, frames) of a manifest, every line checked:
    the columnar form of read_manifest, for sets too large to hold as dicts."""
    if not path.is_file():
        raise UserError(f"{path}: missing manifest.jsonl (was this folder made by prep_mels.py?)")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise UserError(f"{path}: not UTF-8 text (was this folder made by prep_mels.py?)") from None
    starts, ends, ids, splits, frames = [], [], [], [], []
    # The C scanner reads each object in place (no line copy, ~40% less CPU than json.loads);
    # anything unusual (leading blanks, two values on a line, bad JSON) takes json.loads's path.
    scan, loads, find, pos, lineno = json.JSONDecoder().scan_once, json.loads, text.find, 0, 0
    while pos < len(text):
        end = find("\n", pos)
        end = len(text) if end < 0 else end
        start, pos, lineno = pos, end + 1, lineno + 1
        try:
            e, stop = scan(text, start)
            if stop > end or text[stop:end].strip():
                raise ValueError
        except (StopIteration, ValueError):
            line = text[start:end]
            if not line.strip():
                continue
            try:
                e = loads(line)
            except ValueError:
                raise UserError(f"{path}:{lineno}: not valid JSON") from None
        try:
            clip_id, split = e["id"], e["split"]
        except (KeyError, TypeError, IndexError):
            clip_id = split = None
        if not (isinstance(clip_id, str) and isinstance(split, str)):
            raise UserError(f"{path}:{lineno}: an entry needs a string \"id\" and \"split\"")
        starts.append(start)
        ends.append(end)
        ids.append(clip_id)
        splits.append(split)
        frames.append(_frames_of(e.get("frames")))
    return (text, np.array(starts, np.int64), np.array(ends, np.int64), ids, splits,
            np.array(frames, np.int64))


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
        data, starts, ends, ids, splits, frames = scan_manifest(self.root / "manifest.jsonl")
        self.split = split
        if split is not None:
            keep = [i for i, s in enumerate(splits) if s == split]
            starts, ends, frames = starts[keep], ends[keep], frames[keep]
            ids = [ids[i] for i in keep]
            splits = [split] * len(keep)
        self.entries = ManifestEntries(data, starts, ends)
        # Columns, one row per clip: what open, load and the data loader need without parsing.
        self._ids = ids
        self._split_names = sorted(set(splits))
        code = {s: k for k, s in enumerate(self._split_names)}
        self._split_codes = np.array([code[s] for s in splits], np.int16)
        self._frames = frames
        # Packed splits; per clip its offset in its split's array (-1: not packed). The arrays
        # open lazily (a memory map per process, so forked data-loader workers each map their own).
        self._packed: set[str] = set()
        self._offsets = np.full(len(ids), -1, np.int64)
        self._pack_arrays: dict[str, np.ndarray] = {}
        if prefer_packed:
            for k, s in enumerate(self._split_names):
                rows = np.flatnonzero(self._split_codes == k)
                offsets = self._read_pack_index(s, rows)
                if offsets is not None:
                    self._offsets[rows] = offsets
                    self._packed.add(s)

    def __getstate__(self) -> dict:
        # Pickled into spawned data-loader workers: never the memory maps (pickling one copies
        # the whole array); each process maps its own.
        return {**self.__dict__, "_pack_arrays": {}}

    @property
    def layout(self) -> str:
        """'packed', 'files' or 'mixed' (some splits packed)."""
        if self._split_names and set(self._split_names) <= self._packed:
            return "packed"
        return "mixed" if self._packed else "files"

    def _read_pack_index(self, split: str, rows: np.ndarray) -> np.ndarray | None:
        """Offsets of the clips `rows` (of `split`) in packed/{split}.npy, or None when there is
        no usable pack: missing, unreadable, another num_mels, or not covering every clip with
        the manifest's frame count (a pack older than the manifest: a later run added clips)."""
        path = self.root / "packed" / f"{split}.index.json"
        if not (path.is_file() and path.with_name(f"{split}.npy").is_file()):
            return None
        try:
            data = json.loads(path.read_text())
            pack_ids, offsets, frames = data["ids"], data["offsets"], data["frames"]
            if int(data["num_mels"]) != self.config.num_mels or not (
                len(pack_ids) == len(offsets) == len(frames)
            ):
                return None
            offsets, frames = np.asarray(offsets, np.int64), np.asarray(frames, np.int64)
        except (OSError, ValueError, KeyError, TypeError):
            return None
        if offsets.ndim != 1 or frames.ndim != 1:
            return None
        ids = [self._ids[i] for i in rows]
        if pack_ids != ids:  # prep packs in manifest order; anything else is looked up by id
            where = {clip_id: k for k, clip_id in enumerate(pack_ids)}
            order = np.array([where.get(i, -1) for i in ids], np.int64)
            if (order < 0).any():
                return None
            offsets, frames = offsets[order], frames[order]
        if not np.array_equal(frames, self._frames[rows]):
            return None
        return offsets

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
        return len(self._ids)

    @property
    def ids(self) -> list[str]:
        return list(self._ids)

    def frames(self, index: int) -> int | None:
        """The clip's frame count from the manifest, or None where the manifest has none."""
        n = int(self._frames[index])
        return n if n >= 0 else None

    def frame_counts(self) -> np.ndarray:
        """Each clip's frame count from the manifest (-1 where the manifest has none)."""
        return self._frames.copy()

    def _split_of(self, index: int) -> str:
        return self._split_names[self._split_codes[index]]

    def path(self, index: int) -> Path:
        return self.root / self._split_of(index) / f"{self._ids[index]}.npy"

    def source_path(self, index: int, audio_root: str | os.PathLike | None = None) -> Path | None:
        """The clip's source audio file (see source_roots), or None when it cannot be found."""
        return resolve_source(self.entries[index]["source"], source_roots(self.root, audio_root))

    def load(self, index: int) -> np.ndarray:
        """The clip's float32 log-mel [num_mels, frames]; a bad file is a UserError naming it."""
        split = self._split_of(index)
        if split in self._packed:
            offset, frames = int(self._offsets[index]), int(self._frames[index])
            mel = np.ascontiguousarray(self._pack_array(split)[:, offset : offset + frames])
            return check_mel(
                mel, self.config, f"{self.root}/packed/{split}.npy (clip {self._ids[index]})"
            )
        path = self.path(index)
        try:
            mel = np.load(path, allow_pickle=False)
        except (OSError, ValueError, EOFError) as exc:
            raise UserError(f"{path}: unreadable mel file ({exc})") from None
        # The one mel check (vocode.py and evaluation use it too): dtype, shape, empty, NaN/Inf.
        return check_mel(mel, self.config, str(path))
