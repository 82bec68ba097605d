"""Audio in and out: read any supported file as float32 mono, resample with soxr, write WAV;
list the audio files of a folder and the one rule that splits them into train/valid/test."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from melcore.atomic import atomic_open
from melcore.errors import UserError

AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".mp3", ".aiff", ".aif", ".opus")
# Shares of the hash split (the rest trains); prep and vocoder training both use split_of.
SPLIT_SHARES = {"valid": 0.1, "test": 0.1}


def list_audio(root: str | os.PathLike) -> list[Path]:
    """Audio files below `root`, sorted, hidden files and folders skipped."""
    root = Path(root)
    if not root.is_dir():
        raise UserError(f"{root}: input folder does not exist")
    files = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in filenames:
            if not name.startswith(".") and name.lower().endswith(AUDIO_EXTENSIONS):
                files.append(Path(dirpath) / name)
    return sorted(files)


def split_of(rel_path: str, shares: dict[str, float] | None = None) -> str:
    """train/valid/test from a hash of the file's relative POSIX path: stable across runs and
    when files are added, and every window of one recording lands in the same split."""
    shares = shares or SPLIT_SHARES
    h = int.from_bytes(hashlib.sha1(rel_path.encode()).digest()[:8], "big") / 2**64
    if h < shares["valid"]:
        return "valid"
    if h < shares["valid"] + shares["test"]:
        return "test"
    return "train"


def resample(y: np.ndarray, orig_sr: int, target_sr: int) -> np.ndarray:
    """High-quality (soxr VHQ) resampling along the last axis; a no-op at equal rates."""
    if orig_sr == target_sr:
        return np.asarray(y, dtype=np.float32)
    y = np.asarray(y, dtype=np.float32)
    if y.ndim == 1:
        return soxr.resample(y, orig_sr, target_sr, quality="VHQ").astype(np.float32)
    # soxr wants [time, channels].
    return soxr.resample(y.T, orig_sr, target_sr, quality="VHQ").T.astype(np.float32)


def check_audio_file(path: str | os.PathLike) -> None:
    """Refuse what decoders would silently misread: an empty file, or a WAV whose audio data is
    shorter than its header says (libsndfile would return a shorter clip without a word)."""
    path = Path(path)
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise UserError(f"{path}: cannot read ({exc.strerror})") from None
    if size == 0:
        raise UserError(f"{path}: empty file (0 bytes); re-export or remove it")
    if path.suffix.lower() not in (".wav", ".wave"):
        return
    with open(path, "rb") as f:
        head = f.read(12)
        if head[:4] != b"RIFF" or head[8:12] != b"WAVE":
            return  # not RIFF/WAVE: the decoder reports what it is
        pos = 12
        while pos + 8 <= size:
            f.seek(pos)
            chunk = f.read(8)
            length = int.from_bytes(chunk[4:8], "little")
            if chunk[:4] == b"data":
                if length in (0, 0xFFFFFFFF):
                    return  # a streamed WAV: the length was never filled in
                have = size - pos - 8
                if length > have:
                    raise UserError(
                        f"{path}: truncated WAV (header promises {length} bytes of audio, the file "
                        f"holds {have}); re-export or re-download it"
                    )
                return
            pos += 8 + length + (length & 1)


def read_audio(path: str | os.PathLike, target_sr: int | None = None) -> tuple[np.ndarray, int]:
    """Read `path` as float32 mono in [-1, 1], resampled to `target_sr` when given.

    Raises UserError naming the file for unreadable, empty or non-finite audio.
    """
    path = Path(path)
    check_audio_file(path)
    try:
        y, sr = sf.read(str(path), dtype="float32", always_2d=True)
    except Exception as exc:  # soundfile raises several types for bad files
        try:
            import librosa

            y, sr = librosa.load(str(path), sr=None, mono=False)
            y = np.atleast_2d(y).T
        except Exception:
            raise UserError(f"{path}: not readable audio ({exc})") from None
    if y.shape[0] == 0:
        raise UserError(f"{path}: empty audio (0 samples)")
    y = y.mean(axis=1).astype(np.float32)
    if not np.all(np.isfinite(y)):
        raise UserError(f"{path}: audio contains NaN or Inf samples")
    if target_sr is not None and sr != target_sr:
        y, sr = resample(y, sr, target_sr), target_sr
    return y, int(sr)


def write_wav(path: str | os.PathLike, y: np.ndarray, sr: int, fsync: bool = True) -> None:
    """Write float audio as 16-bit PCM WAV, atomically. Values are clipped to [-1, 1]."""
    y = np.clip(np.nan_to_num(np.asarray(y, dtype=np.float32)), -1.0, 1.0)
    pcm = np.round(y * 32767.0).astype(np.int16)
    with atomic_open(path, "wb", fsync=fsync) as f:
        sf.write(f, pcm, int(sr), subtype="PCM_16", format="WAV")
