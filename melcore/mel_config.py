"""MelConfig: the one description of a mel spectrogram, travelling with every artefact.

Written as `mel_config.json` next to each mel set, stored in every diffusion checkpoint's
`args.json` and next to every vocoder. Two artefacts meet only if their configs match;
otherwise `require_match` stops with both configs in the message.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from melcore.atomic import write_text
from melcore.errors import UserError

# HiFi-GAN's log floor: log(clamp(x, min=1e-5)).
LOG_FLOOR = math.log(1e-5)

# Rate at which clips are stored on disk; the mel preset's rate is used only for analysis.
CLIP_RATE = 16000

# Fields that change the mel values themselves (a vocoder cares about exactly these).
ANALYSIS_FIELDS = ("sampling_rate", "n_fft", "num_mels", "hop_size", "win_size", "fmin", "fmax")


@dataclass(frozen=True)
class MelConfig:
    sampling_rate: int = 22050
    n_fft: int = 1024
    num_mels: int = 80
    hop_size: int = 256
    win_size: int = 1024
    fmin: float = 0.0
    fmax: float | None = 8000.0
    # Normalisation range: log-mel in [mel_min, mel_max] maps linearly to [-1, 1].
    mel_min: float = -12.0
    mel_max: float = 3.0
    # Amplitude treatment before analysis: peak-normalise to this value (HiFi-GAN training
    # does 0.95); None keeps the recorded level.
    peak_normalize: float | None = 0.95
    preset: str = "universal"

    # -- presets -----------------------------------------------------------------------
    @classmethod
    def from_preset(cls, name: str) -> MelConfig:
        if name not in PRESETS:
            raise UserError(f"unknown mel preset {name!r}; choose one of {sorted(PRESETS)}")
        return PRESETS[name]

    # -- JSON --------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_dict(cls, d: dict[str, Any], source: str = "mel config") -> MelConfig:
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise UserError(f"{source}: unknown mel config keys {unknown}")
        missing = [n for n in ANALYSIS_FIELDS if n not in d]
        if missing:
            raise UserError(f"{source}: mel config lacks {missing}")
        try:
            return cls(**d)._validated(source)
        except TypeError as exc:
            raise UserError(f"{source}: invalid mel config ({exc})") from None

    @classmethod
    def from_json(cls, text: str, source: str = "mel config") -> MelConfig:
        try:
            d = json.loads(text)
        except json.JSONDecodeError as exc:
            raise UserError(f"{source}: not valid JSON ({exc})") from None
        if not isinstance(d, dict):
            raise UserError(f"{source}: expected a JSON object")
        return cls.from_dict(d, source)

    @classmethod
    def load(cls, path: str | os.PathLike) -> MelConfig:
        path = Path(path)
        if path.is_dir():
            path = path / "mel_config.json"
        if not path.is_file():
            raise UserError(
                f"{path}: missing mel_config.json (was this folder made by prep_mels.py?)"
            )
        return cls.from_json(path.read_text(), str(path))

    def save(self, path: str | os.PathLike) -> None:
        write_text(path, self.to_json())

    def _validated(self, source: str) -> MelConfig:
        ints = ("sampling_rate", "n_fft", "num_mels", "hop_size", "win_size")
        for name in ints:
            if not isinstance(getattr(self, name), int) or getattr(self, name) <= 0:
                raise UserError(f"{source}: {name} must be a positive integer")
        if self.win_size > self.n_fft:
            raise UserError(f"{source}: win_size {self.win_size} > n_fft {self.n_fft}")
        if self.fmax is not None and self.fmax > self.sampling_rate / 2:
            raise UserError(f"{source}: fmax {self.fmax} above Nyquist {self.sampling_rate / 2}")
        if not self.mel_max > self.mel_min:
            raise UserError(f"{source}: mel_max must exceed mel_min")
        return self

    # -- use ---------------------------------------------------------------------------
    def mel_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for hifigan.meldataset.mel_spectrogram."""
        return {name: getattr(self, name) for name in ANALYSIS_FIELDS}

    def num_frames(self, num_samples: int) -> int:
        """Frames the mel of `num_samples` samples at `sampling_rate` has (center=False)."""
        return num_samples // self.hop_size

    def normalize(self, log_mel: Any) -> Any:
        """Log-mel -> [-1, 1] (values outside the range map outside; callers may clip)."""
        return (log_mel - self.mel_min) / (self.mel_max - self.mel_min) * 2.0 - 1.0

    def denormalize(self, x: Any) -> Any:
        return (x + 1.0) / 2.0 * (self.mel_max - self.mel_min) + self.mel_min

    def differences(self, other: MelConfig, names: tuple[str, ...] | None = None) -> dict:
        names = names or tuple(f.name for f in fields(self) if f.name != "preset")
        return {
            n: (getattr(self, n), getattr(other, n))
            for n in names
            if getattr(self, n) != getattr(other, n)
        }


def require_match(
    a: MelConfig,
    b: MelConfig,
    a_name: str,
    b_name: str,
    names: tuple[str, ...] | None = None,
) -> None:
    """Stop with both configs shown when `a` and `b` differ in any of `names`."""
    diff = a.differences(b, names)
    if diff:
        shown = ", ".join(f"{k}: {va!r} vs {vb!r}" for k, (va, vb) in sorted(diff.items()))
        raise UserError(f"mel config mismatch between {a_name} and {b_name} ({shown})")


PRESETS: dict[str, MelConfig] = {
    # Exactly the official pretrained HiFi-GAN UNIVERSAL_V1 vocoder's analysis.
    "universal": MelConfig(),
    # Same sizes at the clips' native 16 kHz, for vocoders trained here.
    "16k": MelConfig(sampling_rate=16000, preset="16k"),
}
