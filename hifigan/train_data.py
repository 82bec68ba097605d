"""Audio for vocoder training: clips listed by prepared mel sets (or plain audio folders).

A mel set's `manifest.jsonl` names each clip's `source` (relative to prep's input root) and,
for windows cut from long files, `start_s`. Audio is read at the 16 kHz clip rate with
melcore.audio.read_audio, then resampled to the vocoder's analysis rate and peak-normalised
(hifigan.meldataset.prepare_audio, HiFi-GAN's `normalize(audio) * 0.95`). Mels come from
hifigan.meldataset.mel_spectrogram, the project's one mel function.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from hifigan.meldataset import mel_spectrogram, prepare_audio
from melcore.audio import list_audio, read_audio, split_of
from melcore.errors import UserError
from melcore.mel_config import CLIP_RATE, MelConfig
from melcore.melset import read_manifest, resolve_source, source_roots


@dataclass(frozen=True)
class ClipRef:
    path: str
    start_s: float = 0.0
    duration_s: float | None = None  # None: to the end of the file


def clips_from_dirs(
    dirs: list[str | os.PathLike], audio_root: str | os.PathLike | None = None
) -> tuple[dict[str, list[ClipRef]], MelConfig | None]:
    """{'train': [...], 'valid': [...]} clips from mel sets and/or audio folders, and the first
    mel set's config (None when only audio folders were given)."""
    splits: dict[str, list[ClipRef]] = {"train": [], "valid": [], "test": []}
    base_config = None
    for d in map(Path, dirs):
        if not d.is_dir():
            raise UserError(f"--mel_dir {d}: no such folder")
        if (d / "manifest.jsonl").is_file():
            config = MelConfig.load(d / "mel_config.json")
            base_config = base_config or config
            roots = source_roots(d, audio_root)
            for e in read_manifest(d / "manifest.jsonl"):
                path = resolve_source(e["source"], roots)
                if path is None:
                    raise UserError(
                        f"{d / 'manifest.jsonl'}: source {e['source']!r} of clip {e['id']!r} not found; "
                        "pass --audio_root (the folder prep_mels.py read)"
                    )
                dur = e["frames"] * config.hop_size / config.sampling_rate if "start_s" in e else None
                splits.setdefault(e["split"], []).append(ClipRef(str(path), float(e.get("start_s", 0.0)), dur))
        else:
            files = list_audio(d)
            if not files:
                raise UserError(f"--mel_dir {d}: neither a mel set (manifest.jsonl) nor a folder with audio")
            # The split prep_mels.py gives the same folder (a hash of the relative path).
            for p in files:
                splits[split_of(p.relative_to(d).as_posix())].append(ClipRef(str(p)))
    if not splits["train"]:
        raise UserError(f"--mel_dir {' '.join(map(str, dirs))}: no training clips")
    if not splits["valid"]:
        # Tiny sets: validate on the first training clip rather than not at all.
        splits["valid"] = splits["train"][:1]
    return splits, base_config


class AudioSegments(torch.utils.data.Dataset):
    """(mel input, audio, loss mel) per clip: random `segment_size` crops when `split` is
    training, whole clips otherwise (as the official MelDataset)."""

    def __init__(self, clips: list[ClipRef], h: dict, config: MelConfig, train: bool = True):
        self.clips = clips
        self.h = h
        self.config = config
        self.train = train
        self._cache: dict[int, np.ndarray] = {}

    def __len__(self) -> int:
        return len(self.clips)

    def audio(self, index: int) -> np.ndarray:
        if index not in self._cache:
            c = self.clips[index]
            y, sr = read_audio(c.path, CLIP_RATE)
            start = int(round(c.start_s * sr))
            stop = None if c.duration_s is None else start + int(round(c.duration_s * sr))
            y = y[start:stop]
            if y.size == 0:
                raise UserError(f"{c.path}: no audio at {c.start_s} s")
            self._cache[index] = prepare_audio(y, sr, self.config)
        return self._cache[index]

    def __getitem__(self, index: int):
        audio = torch.from_numpy(self.audio(index))[None]
        seg = self.h["segment_size"]
        if self.train:
            if audio.size(1) >= seg:
                # torch's RNG: DataLoader seeds it differently in every worker.
                start = int(torch.randint(0, audio.size(1) - seg + 1, (1,)))
                audio = audio[:, start : start + seg]
            else:
                audio = torch.nn.functional.pad(audio, (0, seg - audio.size(1)))
        kw = self.config.mel_kwargs()
        with torch.no_grad():
            mel = mel_spectrogram(audio, **kw)
            mel_loss = mel_spectrogram(audio, **{**kw, "fmax": self.h.get("fmax_for_loss")})
        return mel[0], audio[0], mel_loss[0]
