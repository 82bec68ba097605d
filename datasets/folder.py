"""Any folder of audio (MAESTRO, ESC-50, a violin recording...) as fixed-length 16 kHz clips.

Every wav/flac/ogg/mp3/aiff file below the root is read as mono (soundfile, streaming long
files window by window; librosa as a fallback for what soundfile cannot open), resampled to
16 kHz with soxr, cut into windows of `window_s` seconds every `hop_s` seconds, and windows
quieter than `min_rms_db` dBFS are dropped. A file shorter than one window is one shorter clip.
The split is decided per source file from a hash of its relative path, so it never changes
when files are added and two windows of one recording never land in different splits.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from melcore.audio import (  # noqa: F401  (AUDIO_EXTENSIONS, SPLIT_SHARES: this module's names too)
    AUDIO_EXTENSIONS,
    SPLIT_SHARES,
    check_audio_file,
    list_audio,
    read_audio,
    resample,
    split_of,
)
from melcore.errors import UserError
from melcore.mel_config import CLIP_RATE

# Formats libsndfile reads itself: a file it cannot open is damaged, and librosa's fallback
# (audioread probing its backends, seconds per file) would only fail slower.
SOUNDFILE_NATIVE = (".wav", ".flac", ".ogg", ".aiff", ".aif")
DEFAULT_WINDOW_S = 4.0
DEFAULT_MIN_RMS_DB = -50.0


@dataclass(frozen=True)
class Window:
    id: str
    split: str
    source: str  # path relative to the root
    index: int
    start_s: float
    audio: np.ndarray  # float32 mono at 16 kHz


def clip_stem(rel_path: str) -> str:
    """A file name safe id stem from a relative path: 'a/b c.wav' -> 'a__b_c_wav'."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", rel_path.replace("/", "__")).replace(".", "_")


def read_clip(path: str | os.PathLike, target_sr: int = CLIP_RATE) -> np.ndarray:
    """A whole file as float32 mono at `target_sr` (melcore.audio.read_audio, failing fast)."""
    import soundfile as sf

    path = Path(path)
    if path.suffix.lower() in SOUNDFILE_NATIVE:
        try:
            sf.info(str(path))
        except Exception as exc:
            raise UserError(f"{path}: not readable audio ({exc})") from None
    return read_audio(path, target_sr)[0]


def rms_db(y: np.ndarray) -> float:
    rms = float(np.sqrt(np.mean(np.square(y, dtype=np.float64)))) if y.size else 0.0
    return 20 * np.log10(max(rms, 1e-12))


def _windows_soundfile(path: Path, window_s: float, hop_s: float) -> Iterator[tuple[int, float, np.ndarray]]:
    """(index, start_s, audio at 16 kHz) read block by block so long files never load whole."""
    import soundfile as sf

    with sf.SoundFile(str(path)) as f:
        sr, total = f.samplerate, f.frames
        if total <= 0:
            raise UserError(f"{path}: empty audio (0 samples)")
        win, hop = round(window_s * sr), max(1, round(hop_s * sr))
        out_len = round(window_s * CLIP_RATE)
        starts = list(range(0, total - win + 1, hop)) if total >= win else [0]
        for index, start in enumerate(starts):
            f.seek(start)
            block = f.read(min(win, total), dtype="float32", always_2d=True)
            y = block.mean(axis=1)
            if not np.all(np.isfinite(y)):
                raise UserError(f"{path}: audio contains NaN or Inf samples")
            y = resample(y, sr, CLIP_RATE)
            if total >= win:  # a full window: exactly window_s at 16 kHz
                y = np.pad(y, (0, max(0, out_len - y.size)))[:out_len]
            yield index, start / sr, y.astype(np.float32)


def _windows_whole(path: Path, window_s: float, hop_s: float) -> Iterator[tuple[int, float, np.ndarray]]:
    y = read_clip(path, CLIP_RATE)
    win, hop = round(window_s * CLIP_RATE), max(1, round(hop_s * CLIP_RATE))
    starts = list(range(0, y.size - win + 1, hop)) if y.size >= win else [0]
    for index, start in enumerate(starts):
        yield index, start / CLIP_RATE, y[start : start + win]


def file_windows(
    path: str | os.PathLike,
    rel_path: str,
    window_s: float = DEFAULT_WINDOW_S,
    hop_s: float | None = None,
    min_rms_db: float = DEFAULT_MIN_RMS_DB,
) -> Iterator[Window]:
    """The non-silent windows of one file. Unreadable, empty or NaN audio is a UserError."""
    path = Path(path)
    hop_s = window_s if hop_s is None else hop_s
    if window_s <= 0 or hop_s <= 0:
        raise UserError(f"window {window_s} s / hop {hop_s} s: both must be positive")
    split, stem = split_of(rel_path), clip_stem(rel_path)
    check_audio_file(path)
    try:
        import soundfile as sf

        sf.info(str(path))
        gen = _windows_soundfile(path, window_s, hop_s)
    except Exception:
        # Formats libsndfile cannot open (some mp3 builds): decode whole with librosa.
        gen = _windows_whole(path, window_s, hop_s)
    try:
        for index, start_s, y in gen:
            if rms_db(y) < min_rms_db:
                continue
            yield Window(f"{stem}-w{index:05d}", split, rel_path, index, start_s, y)
    except UserError:
        raise
    except Exception as exc:  # libsndfile errors on a file damaged past its header
        raise UserError(f"{path}: not readable audio ({exc})") from None


def iter_clips(
    root: str | os.PathLike,
    split: str | None = None,
    window_s: float = DEFAULT_WINDOW_S,
    hop_s: float | None = None,
    min_rms_db: float = DEFAULT_MIN_RMS_DB,
) -> Iterator[Window]:
    """Every kept window of every audio file below `root` (optionally one split only).

    Files that cannot be read raise UserError; prep_mels catches them per file instead.
    """
    root = Path(root)
    for path in list_audio(root):
        rel = path.relative_to(root).as_posix()
        if split is not None and split_of(rel) != split:
            continue
        yield from file_windows(path, rel, window_s, hop_s, min_rms_db)
