"""Training batches of normalised log-mel crops, sharded by rank and resumable at any step.

Every sample is a function of (seed, rank, position), where position counts the samples this
rank has drawn so far (step * batch_size + j). Clip order is a per-epoch permutation of the
rank's shard and the crop offset is drawn from its own generator, so a run restarted at step
k sees exactly the batches an uninterrupted run sees, whatever the number of workers.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from melcore.errors import UserError
from melcore.mel_config import LOG_FLOOR, MelConfig, require_match
from melcore.melset import MelSet

CROPS = ("random", "none")
# A crop may be this much wider than the longest clip (the rest is silence padding).
WHOLE_CLIP_SLACK = 1.125


def fit_width(mel: np.ndarray, width: int, offset: int = 0) -> np.ndarray:
    """`width` frames of `mel` from `offset`; frames past the end are the log floor (silence)."""
    window = mel[:, offset : offset + width]
    if window.shape[1] < width:
        pad = np.full((mel.shape[0], width - window.shape[1]), LOG_FLOOR, dtype=np.float32)
        window = np.concatenate([window, pad], axis=1)
    return window


def normalize_clip(log_mel: np.ndarray, config: MelConfig) -> np.ndarray:
    """Log-mel -> float32 in [-1, 1] with the set's range (values outside it are clipped)."""
    return np.clip(config.normalize(log_mel.astype(np.float32)), -1.0, 1.0).astype(np.float32)


def crop_offset(frames: int, width: int, rng: np.random.Generator) -> int:
    """A uniform start so every frame of a long clip can be seen; 0 for clips <= width."""
    return int(rng.integers(0, frames - width + 1)) if frames > width else 0


def clip_frames(melset: MelSet, index: int) -> int:
    frames = melset.frames(index)
    return frames if frames is not None else int(melset.load(index).shape[1])


def longest_clip(melset: MelSet) -> int:
    """Frames of the set's longest clip (0 for an empty set): what a whole clip is."""
    # The manifest's counts as one array (no per-clip parsing); clips without one are loaded.
    counts = melset.frame_counts()
    known = int(counts.max(initial=0))
    unknown = np.flatnonzero(counts < 0)
    return max([known, *(int(melset.load(int(i)).shape[1]) for i in unknown)])


class MelCrops(Dataset):
    """Indexed by position (unbounded): sample `position` of this rank's endless stream."""

    def __init__(
        self,
        melset: MelSet,
        width: int,
        *,
        crop: str = "random",
        class_cond: bool = False,
        shuffle: bool = True,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
    ):
        if crop not in CROPS:
            raise UserError(f"--crop: unknown value {crop!r}; choose one of {CROPS}")
        if width <= 0:
            raise UserError(f"--crop_width: must be positive, got {width}")
        self.melset = melset
        self.width = width
        self.crop = crop
        self.class_cond = class_cond
        self.shuffle = shuffle
        self.seed = seed
        self.rank = rank
        # Disjoint shards: rank r owns clips r, r + W, r + 2W, ...
        self.shard = list(range(rank, len(melset), world_size))
        if not self.shard:
            raise UserError(
                f"{melset.root}: {len(melset)} clips in split {melset.split!r} for {world_size} "
                "processes; every process needs at least one clip (use fewer processes)"
            )
        # Labels parsed once into an array: per-sample lookups then parse nothing, and an
        # array is not copied into forked workers the way a list of objects is.
        self._families: np.ndarray | None = None
        if class_cond:
            families = [e.get("instrument_family") for e in melset.entries]
            missing = [i for i, f in zip(melset.ids, families) if f is None][:3]
            if missing:
                raise UserError(
                    f"{melset.root}/manifest.jsonl: --class_cond needs instrument_family, missing for "
                    f"{missing}; train with --class_cond False"
                )
            self._families = np.asarray(families, dtype=np.int64)
        self._perm_epoch = -1
        self._perm: np.ndarray | None = None

    def clip_index(self, position: int) -> int:
        n = len(self.shard)
        epoch, k = divmod(position, n)
        if not self.shuffle:
            return self.shard[k]
        if epoch != self._perm_epoch:
            rng = np.random.default_rng([self.seed, self.rank, epoch, 0x5EED])
            self._perm, self._perm_epoch = rng.permutation(n), epoch
        return self.shard[int(self._perm[k])]

    def __getitem__(self, position: int):
        index = self.clip_index(position)
        mel = self.melset.load(index)
        offset = 0
        if self.crop == "random":
            rng = np.random.default_rng([self.seed, self.rank, position, 0xC409])
            offset = crop_offset(mel.shape[1], self.width, rng)
        x = normalize_clip(fit_width(mel, self.width, offset), self.melset.config)[None]
        cond = {}
        if self.class_cond:
            cond["y"] = np.int64(self._families[index])
        return x, cond


class _Positions(Sampler):
    """start, start + 1, ... forever."""

    def __init__(self, start: int):
        self.start = start

    def __iter__(self) -> Iterator[int]:
        pos = self.start
        while True:
            yield pos
            pos += 1


def _worker_init(_: int) -> None:
    # Workers only read and crop; many torch threads per worker would fight the trainer.
    torch.set_num_threads(1)
    # Ctrl-C / SIGTERM reach the whole process group: the trainer saves a checkpoint and
    # stops, so its workers must not die first (they exit with the trainer anyway).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


class MelLoader:
    """Endless iterator of (x [B, 1, num_mels, width] in [-1, 1], cond dict); `set_step` seeks."""

    def __init__(self, dataset: MelCrops, batch_size: int, num_workers: int = 0):
        if batch_size <= 0:
            raise UserError(f"--batch_size: must be positive, got {batch_size}")
        if num_workers < 0:
            raise UserError(f"--num_workers: must be >= 0, got {num_workers}")
        self.dataset = dataset
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.config = dataset.melset.config
        self.step = 0
        self._it = None

    def set_step(self, step: int) -> None:
        """Continue as if `step` batches had already been drawn."""
        self.step = step
        self._it = None

    def _loader(self) -> Iterator:
        loader = DataLoader(
            self.dataset,
            batch_size=self.batch_size,
            sampler=_Positions(self.step * self.batch_size),
            num_workers=self.num_workers,
            worker_init_fn=_worker_init if self.num_workers else None,
            pin_memory=torch.cuda.is_available(),
            drop_last=True,
        )
        return iter(loader)

    def __iter__(self) -> MelLoader:
        return self

    def __next__(self):
        if self._it is None:
            self._it = self._loader()
        x, cond = next(self._it)
        self.step += 1
        return x, cond

    def close(self) -> None:
        """Stop the worker processes now. They ignore SIGTERM (see _worker_init), so leaving
        them to interpreter exit, which terminates daemon children with SIGTERM, would hang."""
        it, self._it = self._it, None
        if it is not None and hasattr(it, "_shutdown_workers"):
            it._shutdown_workers()


def load_data(
    *,
    data_dir: str | os.PathLike,
    batch_size: int,
    image_size: int | None = None,
    crop_width: int | None = 64,
    class_cond: bool = False,
    deterministic: bool = False,
    split: str = "train",
    crop: str = "random",
    num_workers: int = 2,
    seed: int = 0,
    mel_config: MelConfig | None = None,
    start_step: int = 0,
) -> MelLoader:
    """Batches `(x, cond)` forever from the mel set in `data_dir` (DESIGN.md "Training data").

    `image_size` is upstream's name; it is used as the width only when `crop_width` is None.
    `deterministic` keeps clip order fixed (no shuffling); crops stay seeded by `seed`.
    `mel_config`, when given, must equal the set's config (the model was built for it).
    """
    from melcore import dist_util

    width = crop_width if crop_width is not None else image_size
    if width is None:
        raise UserError("load_data: give crop_width (frames per training window)")
    melset = MelSet(data_dir, split)
    if len(melset) == 0:
        raise UserError(f"{data_dir}: no clips in split {split!r}; run prep_mels.py or pick another split")
    if mel_config is not None:
        require_match(melset.config, mel_config, f"{data_dir}/mel_config.json", "the model's mel config")
    longest = longest_clip(melset)
    # Whole-clip training pads each clip up to the UNet's size multiple (344 -> 352 frames);
    # a window mostly made of padding is a mistake.
    if crop == "random" and width > longest * WHOLE_CLIP_SLACK:
        raise UserError(
            f"--crop_width {width}: wider than every clip in {data_dir} split {split!r} "
            f"(longest has {longest} frames); use --crop_width <= {int(longest * WHOLE_CLIP_SLACK)}"
        )
    dataset = MelCrops(
        melset,
        width,
        crop=crop,
        class_cond=class_cond,
        shuffle=not deterministic,
        seed=seed,
        rank=dist_util.get_rank(),
        world_size=dist_util.get_world_size(),
    )
    loader = MelLoader(dataset, batch_size, num_workers)
    loader.set_step(start_step)
    return loader
