"""Are generated clips new, or copies of training clips? Nearest-training-clip distances.

A model that reproduces its training clips scores at (or below) the real-vs-real floor on every
distribution metric, so those metrics cannot tell learning from memorising. Here each clip's
distance to its nearest training clip (RMS over the normalised mel, [-1, 1]) is set beside
the same distance for held-out real clips: generated clips that are no closer to the training
set than unseen real clips are not copies. A generated clip counts as a copy when it is closer
than COPY_FRACTION x the held-out clips' 5th percentile (a copy sits near 0; unseen clips of
the same instruments are not that close). evaluation.findings gates the verdict on the share of
copies (COPY_SHARE there).

Clips are compared over their first T frames (T = the shortest clip of either set): notes start
at the onset, so two copies of a note line up frame for frame.
"""

from __future__ import annotations

import numpy as np

from evaluation.mels import normalized
from melcore.mel_config import MelConfig

COPY_FRACTION = 0.5
MAX_TRAIN = 20_000  # training clips compared at most (a seeded subset beyond: NSynth has 289k)
CHUNK = 256  # training clips per distance block (float64: 256 x 80 x 344 x 8 B = 56 MB)


def _flat(mels: list[np.ndarray], frames: int, config: MelConfig) -> np.ndarray:
    return np.stack([normalized(m[:, :frames], config).reshape(-1) for m in mels]).astype(
        np.float64
    )


def nearest_distances(
    queries: list[np.ndarray], train: list[np.ndarray], config: MelConfig, frames: int
) -> tuple[np.ndarray, np.ndarray]:
    """Per query clip: RMS distance to its nearest training clip over `frames` frames, and that
    clip's index in `train`."""
    q = _flat(queries, frames, config)
    q_sq = (q**2).sum(1)
    best = np.full(len(q), np.inf)
    which = np.zeros(len(q), dtype=np.int64)
    for start in range(0, len(train), CHUNK):
        t = _flat(train[start : start + CHUNK], frames, config)
        d2 = q_sq[:, None] + (t**2).sum(1)[None, :] - 2.0 * q @ t.T
        i = d2.argmin(1)
        d = d2[np.arange(len(q)), i]
        better = d < best
        best[better], which[better] = d[better], i[better] + start
    return np.sqrt(np.maximum(best, 0.0) / q.shape[1]), which


def _summary(d: np.ndarray) -> dict:
    return {"median": float(np.median(d)), "p5": float(np.percentile(d, 5)), "min": float(d.min())}


def nearest_train_check(
    train: list[np.ndarray],
    floor: list[np.ndarray] | None,
    generated: list[np.ndarray],
    config: MelConfig,
    seed: int = 0,
) -> dict:
    """The copy check's numbers (see the module docstring): each row's nearest-training-clip
    distances (median, 5th percentile, least), the median ratio generated / held-out, the copy
    threshold and how many generated clips fall under it (None without held-out clips)."""
    notes = []
    if len(train) > MAX_TRAIN:
        idx = np.sort(np.random.default_rng(seed).choice(len(train), MAX_TRAIN, replace=False))
        train = [train[i] for i in idx]
        notes.append(f"compared with a seeded subset of {MAX_TRAIN} training clips")
    everything = [*train, *generated, *(floor or [])]
    frames = min(m.shape[1] for m in everything)
    gen_d, gen_i = nearest_distances(generated, train, config, frames)
    out = {
        "n": len(generated),
        "frames": frames,
        "train_clips": len(train),
        "generated": _summary(gen_d),
        "distinct_nearest": int(len(set(gen_i.tolist()))),
        "floor": None,
        "ratio": None,
        "copy_threshold": None,
        "copies": None,
        "copy_share": None,
        "notes": notes,
    }
    if floor:
        floor_d, _ = nearest_distances(floor, train, config, frames)
        threshold = COPY_FRACTION * float(np.percentile(floor_d, 5))
        copies = int((gen_d < threshold).sum())
        out.update(
            floor=_summary(floor_d),
            ratio=float(np.median(gen_d) / max(np.median(floor_d), 1e-12)),
            copy_threshold=threshold,
            copies=copies,
            copy_share=copies / len(gen_d),
        )
    return out
