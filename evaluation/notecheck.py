"""Is this log-mel a note? A per-sample check that noise and noise-like samples fail.

A note of the embedded set is one pitched (sometimes percussive) sound: an onset, ~3 s held,
then a release to silence. Its log-mel has a few horizontal lines (partials) at fixed mel
bins, energy concentrated in them, small frame-to-frame change, and the log floor after the
release. Noise and the bad samples of an undertrained model have broadband energy, large
frame-to-frame jitter, salt-and-pepper pixels, or no fine structure that stays put.

Features (natural-log mels, HiFi-GAN's floor log(1e-5); one frame = one column):
- `active_share`: share of frames whose mean log-mel is above floor + `active_margin`.
- `flatness`: median over active frames of the spectral flatness of the linear mel magnitude
  (geometric / arithmetic mean of exp(log-mel)); 1 for a flat (white) frame.
- `roughness`: median over pairs of consecutive active frames of the mean over bins of
  |x[:, t+1] - x[:, t]| (nats); the median ignores the few frames of an onset or release.
- `stable_partials`: mel bins that are a local peak (above both neighbours by `peak_margin`
  nats) in at least `peak_persistence` of the active frames (reported, not a criterion: the
  partials of low notes are closer than two mel bins and are not peaks).
- `partial_stability`: how much of the fine spectral structure stays put over time. The fine
  structure is the log-mel minus its running mean over `ripple_bins` mel bins (partials and the
  gaps between them); its mean over the active frames is the part that is held, and the
  criterion is std over bins of that mean / std of the whole fine structure: ~1 when every frame
  has the same lines, ~1/sqrt(frames) for pixel noise.
- `partial_depth`: how deep the held partials are, in nats: std over bins of that time-mean fine
  structure (the numerator of `partial_stability`, not divided by the spread). A haze or wash
  between the partials fills the gaps and makes them shallow while the little structure left
  still stays put, so stability and flatness miss it and depth does not (real notes: median
  0.85; the 3,200-step demo model, hazy by eye: 0.58; notes-unet-v2: 0.84). It is computed by
  `datasets.curation`, which `prep_mels.py --min_partial_depth` curates training data with.
- `level_range`: 95th minus 5th percentile of the frame mean log-mel (the note's envelope).

Calibrated on the embedded NSynth-GM `small` set (3,042 notes of all splits, universal preset,
344 frames): 93% pass (2,831). partial_stability of real notes: 1st percentile 0.50, median
0.95; of noise: iid pixel noise 0.04-0.11, noise smoothed over 4 / 8 / 16 frames at most 0.23 /
0.34 / 0.42, real notes plus 1 nat of noise at most 0.30. The real notes that fail are sustained
pads whose release outlasts the 4 s clip (172, level range 1.2-2.5: the synth lead and synthetic
string families), high bowed strings and flutes with vibrato (20, jittery) and a handful more; the
peak-count criterion this replaced failed 13% (408), most of them low notes (pitch <= 36) whose
partials are held lines but not peaks. Uniform / Gaussian random log-mels, smoothed noise,
white-noise audio (flatness 0.94), real notes plus Gaussian jitter of 1 nat (roughness 1.1) or
with 20% salt-and-pepper pixels (roughness 1.5), and the set's mean spectrum repeated (no change
over time, no envelope) all fail; tests/test_notecheck.py checks these cases on data it renders.
The thresholds assume 80-bin HiFi-GAN log-mels; pass a `NoteCheckConfig` to change them.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

from datasets.curation import ACTIVE_MARGIN, RIPPLE_BINS, held_fine_structure, sounding_frames
from melcore.mel_config import LOG_FLOOR

# HiFi-GAN's log floor, log(clamp(x, 1e-5)).
FLOOR = LOG_FLOOR


@dataclass(frozen=True)
class NoteCheckConfig:
    floor: float = FLOOR
    active_margin: float = ACTIVE_MARGIN  # a frame is active when its mean log-mel > floor + this
    min_active_share: float = 0.1  # fewer active frames: silent
    max_flatness: float = 0.5  # real <= 0.37, white-noise audio 0.94
    max_roughness: float = 0.45  # real 0.05-0.25; noisy jitter >= 0.8
    min_roughness: float = 0.01  # real >= 0.05; below: a frozen spectrum, no sound is that still
    peak_margin: float = 0.5  # nats (4.3 dB) above both neighbouring bins
    peak_persistence: float = 0.5  # share of active frames in which a stable partial is a peak
    ripple_bins: int = RIPPLE_BINS  # the running mean over mel bins that the fine structure is taken from
    min_partial_stability: float = 0.45  # real: 1st pct 0.50; noise held 16 frames <= 0.42
    min_level_range: float = 2.5  # real whole notes >= 4.6 (onset, hold, release to silence)
    envelope_min_frames: int = 256  # the envelope is checked only on clips this long (whole notes)


DEFAULT = NoteCheckConfig()


@dataclass
class NoteCheck:
    is_note: bool
    reasons: list[str] = field(default_factory=list)
    frames: int = 0
    active_share: float = 0.0
    flatness: float = float("nan")
    roughness: float = float("nan")
    stable_partials: int = 0
    partial_stability: float = 0.0
    partial_depth: float = 0.0
    level_range: float = float("nan")

    def to_dict(self) -> dict:
        return asdict(self)


def _stable_partials(active: np.ndarray, config: NoteCheckConfig) -> int:
    """Mel bins that are a local peak by `peak_margin` in >= `peak_persistence` of the frames."""
    if active.shape[0] < 3:
        return 0
    mid = active[1:-1]
    peak = (mid > active[:-2] + config.peak_margin) & (mid > active[2:] + config.peak_margin)
    return int((peak.mean(axis=1) >= config.peak_persistence).sum())


def check_note(log_mel: np.ndarray, config: NoteCheckConfig | None = None) -> NoteCheck:
    """Features of one log-mel [num_mels, frames] and whether they look like a real note."""
    config = config or DEFAULT
    x = np.asarray(log_mel, dtype=np.float64)
    if x.ndim == 3 and x.shape[0] == 1:
        x = x[0]
    if x.ndim != 2 or x.shape[1] == 0:
        raise ValueError(f"log-mel must be [num_mels, frames], got shape {x.shape}")
    frames = x.shape[1]
    energy = x.mean(axis=0)
    active = sounding_frames(x, config.floor, config.active_margin)
    result = NoteCheck(False, frames=frames, active_share=float(active.mean()))
    result.level_range = float(np.percentile(energy, 95) - np.percentile(energy, 5))
    if result.active_share < config.min_active_share or active.sum() < 2:
        result.reasons.append(f"silent: {result.active_share:.0%} of frames above the floor")
        return result
    xa = x[:, active]
    # Flatness in the linear domain, computed stably: exp(mean(x) - logsumexp-mean).
    top = xa.max(axis=0)
    log_arith = top + np.log(np.exp(xa - top).mean(axis=0))
    result.flatness = float(np.median(np.exp(xa.mean(axis=0) - log_arith)))
    pairs = active[1:] & active[:-1]
    if pairs.any():
        result.roughness = float(np.median(np.abs(np.diff(x, axis=1))[:, pairs].mean(axis=0)))
    else:
        result.roughness = 0.0
    result.stable_partials = _stable_partials(xa, config)
    result.partial_stability, result.partial_depth = held_fine_structure(xa, config.ripple_bins)

    if result.flatness > config.max_flatness:
        result.reasons.append(f"broadband: flatness {result.flatness:.2f} > {config.max_flatness}")
    if result.roughness > config.max_roughness:
        result.reasons.append(
            f"jittery: frame-to-frame change {result.roughness:.2f} > {config.max_roughness} nats"
        )
    if result.roughness < config.min_roughness:
        result.reasons.append(
            f"frozen: frame-to-frame change {result.roughness:.3f} < {config.min_roughness} nats"
        )
    if result.partial_stability < config.min_partial_stability:
        result.reasons.append(
            f"no stable partial: partial stability {result.partial_stability:.2f} < "
            f"{config.min_partial_stability} (the fine spectral structure does not stay put)"
        )
    if frames >= config.envelope_min_frames and result.level_range < config.min_level_range:
        result.reasons.append(
            f"no envelope: level range {result.level_range:.2f} < {config.min_level_range} nats over the clip"
        )
    result.is_note = not result.reasons
    return result


def check_notes(mels, config: NoteCheckConfig | None = None) -> list[NoteCheck]:
    return [check_note(m, config) for m in mels]


def note_share(mels, config: NoteCheckConfig | None = None) -> float:
    """Share of log-mels that pass `check_note` (nan for an empty list)."""
    checks = check_notes(mels, config)
    return float(np.mean([c.is_note for c in checks])) if checks else float("nan")


def summarize(checks: list[NoteCheck]) -> dict:
    """Share passing and how many failed for each kind of reason (the word before the colon)."""
    reasons: dict[str, int] = {}
    for c in checks:
        for r in c.reasons:
            kind = r.split(":", 1)[0]
            reasons[kind] = reasons.get(kind, 0) + 1
    n = len(checks)
    passed = sum(c.is_note for c in checks)
    return {
        "n": n,
        "notes": passed,
        "note_share": passed / n if n else float("nan"),
        "reasons": reasons,
    }
