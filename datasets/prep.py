"""Clips -> a prepared mel set, the layout of DESIGN.md (the library behind scripts/prep_mels.py).

    OUT/mel_config.json              the MelConfig every mel was made with
    OUT/{train,valid,test}/<id>.npy  float32 log-mel [num_mels, frames] (audio_to_mel)
    OUT/manifest.jsonl               id, split, source, frames (+ NSynth labels)
    OUT/stats.json                   global / per-bin / per-split statistics
    OUT/rejected.jsonl               files that could not be used, with the reason
    OUT/curated.jsonl                clips curation left out (id, split, source, partial_depth)
    OUT/packed/{split}.npy           optional (--pack): all frames of a split in one array,
    OUT/packed/{split}.index.json    [num_mels, total_frames], plus (id, offset, frames)

Input is an NSynth-layout root (`nsynth*-{split}` folders, or one such folder) or any folder
of audio (cut into windows by datasets.folder). Work is spread over processes; a rerun skips
every clip whose .npy loads with the expected shape and redoes the rest; manifest, stats and
the packed arrays are rewritten atomically at the end.

Curation (off by default): with `Options.min_partial_depth` > 0 a clip whose held partials are
shallower than that (datasets.curation.partial_depth: a broadband wash, an effect, a low
tremolo) is left out of every split and listed in curated.jsonl with its depth.
"""

from __future__ import annotations

import dataclasses
import json
import multiprocessing as mp
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from melcore.atomic import atomic_open, ensure_dir, save_npy, write_json, write_text
from melcore.errors import UserError
from melcore.mel_config import CLIP_RATE, MelConfig, require_match
from melcore.run_lock import RunLock

SPLITS = ("train", "valid", "test")
LABEL_KEYS = ("pitch", "velocity", "instrument", "instrument_family", "instrument_source", "qualities")
PACK_DTYPES = ("float16", "float32")


@dataclass
class Job:
    """One unit of work: an NSynth clip (`id` set) or an audio file to window (`id` None)."""

    path: str
    source: str  # relative to the input root
    split: str | None = None
    id: str | None = None
    labels: dict = field(default_factory=dict)


@dataclass
class Options:
    window_s: float = 4.0
    hop_s: float | None = None
    min_rms_db: float = -50.0
    min_partial_depth: float = 0.0  # 0: keep every clip; else drop clips shallower (nats)


# -- collecting the input ------------------------------------------------------------------
def collect_jobs(input_dir: str | os.PathLike) -> tuple[str, list[Job]]:
    """('nsynth' | 'folder', jobs) for an NSynth-layout root or a plain folder of audio."""
    from datasets import folder, nsynth

    root = Path(input_dir)
    if not root.is_dir():
        raise UserError(f"--input {root}: folder does not exist")
    split_dirs = nsynth.split_folders(root)
    if not split_dirs:
        files = folder.list_audio(root)
        if not files:
            raise UserError(f"--input {root}: no nsynth*-{{split}} folders and no audio files inside")
        return "folder", [Job(str(p), p.relative_to(root).as_posix()) for p in files]
    # Ids are note_str; prefix the folder name only when one split has several folders.
    prefix = len(split_dirs) > len({s for s, _ in split_dirs})
    jobs = []
    for split, sdir in split_dirs:
        for key, rec in sorted(nsynth.read_examples(sdir).items()):
            wav = sdir / "audio" / f"{key}.wav"
            labels = {k: rec[k] for k in LABEL_KEYS if k in rec}
            clip_id = f"{sdir.name}_{key}" if prefix else key
            src = wav.relative_to(root).as_posix() if sdir != root else f"audio/{key}.wav"
            jobs.append(Job(str(wav), src, split, clip_id, labels))
    return "nsynth", jobs


# -- statistics ----------------------------------------------------------------------------
class Stats:
    """Running per-bin sums over mel frames (float64), mergeable across workers and splits."""

    def __init__(self, num_mels: int):
        self.clips = 0
        self.frames = 0
        self.sum = np.zeros(num_mels)
        self.sumsq = np.zeros(num_mels)
        self.min = np.full(num_mels, np.inf)
        self.max = np.full(num_mels, -np.inf)
        self.below = 0
        self.above = 0

    def add(self, mel: np.ndarray, lo: float, hi: float) -> None:
        m = mel.astype(np.float64)
        self.clips += 1
        self.frames += m.shape[1]
        self.sum += m.sum(axis=1)
        self.sumsq += np.square(m).sum(axis=1)
        self.min = np.minimum(self.min, m.min(axis=1))
        self.max = np.maximum(self.max, m.max(axis=1))
        self.below += int((m < lo).sum())
        self.above += int((m > hi).sum())

    def merge(self, other: Stats) -> None:
        self.clips += other.clips
        self.frames += other.frames
        self.sum += other.sum
        self.sumsq += other.sumsq
        self.min = np.minimum(self.min, other.min)
        self.max = np.maximum(self.max, other.max)
        self.below += other.below
        self.above += other.above

    def summary(self, per_bin: bool = False) -> dict:
        n_bins = self.sum.size
        if self.frames == 0:
            return {"clips": 0, "frames": 0}
        count = self.frames * n_bins
        mean = self.sum.sum() / count
        var = max(self.sumsq.sum() / count - mean**2, 0.0)
        out = {
            "clips": self.clips,
            "frames": self.frames,
            "min": float(self.min.min()),
            "max": float(self.max.max()),
            "mean": float(mean),
            "std": float(np.sqrt(var)),
            "share_below_mel_min": self.below / count,
            "share_above_mel_max": self.above / count,
            "share_outside": (self.below + self.above) / count,
        }
        if per_bin:
            bmean = self.sum / self.frames
            bstd = np.sqrt(np.maximum(self.sumsq / self.frames - bmean**2, 0.0))
            out["per_bin"] = {
                "min": self.min.tolist(), "max": self.max.tolist(),
                "mean": bmean.tolist(), "std": bstd.tolist(),
            }
        return out


# -- worker side ---------------------------------------------------------------------------
_W: dict = {}


def _worker_init(config: MelConfig, out: str, opts: Options) -> None:
    import torch

    # One thread per process: the processes are the parallelism.
    torch.set_num_threads(1)
    _W.update(config=config, out=Path(out), opts=opts, frames_cache={})


def expected_frames(num_samples_16k: int) -> int:
    """Frames audio_to_mel gives for a clip of this many 16 kHz samples (cached per length)."""
    from melcore.audio import resample

    cache, config = _W["frames_cache"], _W["config"]
    if num_samples_16k not in cache:
        n = resample(np.zeros(num_samples_16k, np.float32), CLIP_RATE, config.sampling_rate).size
        cache[num_samples_16k] = config.num_frames(n)
    return cache[num_samples_16k]


def _finished(path: Path, frames: int, num_mels: int) -> np.ndarray | None:
    """The mel at `path` when it is complete (loads, right shape, finite), else None."""
    try:
        mel = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError):
        return None
    if mel.shape != (num_mels, frames) or mel.dtype != np.float32 or not np.all(np.isfinite(mel)):
        return None
    return mel


def _shallow(mel: np.ndarray, min_depth: float) -> float | None:
    """The mel's partial depth when curation leaves it out, else None."""
    from datasets.curation import partial_depth

    if min_depth <= 0:
        return None
    depth = partial_depth(mel)
    return depth if depth < min_depth else None


def _one_clip(clip_id: str, split: str, y: np.ndarray) -> tuple[np.ndarray, bool, float | None]:
    """(mel, whether it was on disk already, its partial depth when curation leaves it out)."""
    from hifigan.meldataset import audio_to_mel

    config, out, opts = _W["config"], _W["out"], _W["opts"]
    path = out / split / f"{clip_id}.npy"
    frames = expected_frames(y.size)
    if frames <= 0:
        raise UserError(f"too short ({y.size} samples) for one mel frame")
    mel = _finished(path, frames, config.num_mels)
    on_disk = mel is not None
    if not on_disk:
        mel = audio_to_mel(y, config)
        if not np.all(np.isfinite(mel)):
            raise UserError("mel has NaN or Inf values")
    shallow = _shallow(mel, opts.min_partial_depth)
    if shallow is not None:
        # A .npy from an earlier run without curation goes too: the folder holds the set.
        path.unlink(missing_ok=True)
    elif not on_disk:
        # No fsync per clip: the rename stays atomic and a rerun re-validates every .npy.
        save_npy(path, mel, fsync=False)
    return mel, on_disk, shallow


def _process(job: Job) -> dict:
    """Mel(s) of one job -> {'entries', 'rejected', 'stats' {split: Stats}, counts}."""
    from datasets import folder
    config, opts = _W["config"], _W["opts"]
    result = {"entries": [], "rejected": [], "curated": [], "stats": {}, "computed": 0, "skipped": 0}

    def keep(clip_id, split, y, extra):
        mel, skipped, shallow = _one_clip(clip_id, split, y)
        if shallow is not None:
            result["curated"].append({"id": clip_id, "split": split, "source": job.source,
                                      "partial_depth": round(shallow, 4)})
            return
        result["skipped" if skipped else "computed"] += 1
        st = result["stats"].setdefault(split, Stats(config.num_mels))
        st.add(mel, config.mel_min, config.mel_max)
        result["entries"].append(
            {"id": clip_id, "split": split, "source": job.source, "frames": int(mel.shape[1]), **extra}
        )

    try:
        if job.id is not None:
            y = folder.read_clip(job.path, CLIP_RATE)
            keep(job.id, job.split, y, job.labels)
        else:
            any_window = False
            for w in folder.file_windows(job.path, job.source, opts.window_s, opts.hop_s, opts.min_rms_db):
                any_window = True
                keep(w.id, w.split, w.audio, {"start_s": round(w.start_s, 4)})
            if not any_window:
                result["rejected"].append({"file": job.source, "reason": "silent (every window below "
                                           f"{opts.min_rms_db} dBFS RMS)"})
    except UserError as exc:
        reason = str(exc)
        # read_audio's messages start with the path; the manifest names the file already.
        reason = reason.split(": ", 1)[1] if reason.startswith(job.path) else reason
        result["rejected"].append({"file": job.source, "reason": reason})
    except Exception as exc:  # a clip must never kill the run; it is reported instead
        result["rejected"].append({"file": job.source, "reason": f"{type(exc).__name__}: {exc}"})
    return result


# -- packing -------------------------------------------------------------------------------
def pack_split(
    out: Path, split: str, entries: list[dict], num_mels: int, dtype: str, progress: bool = True
) -> int:
    """Write packed/{split}.npy ([num_mels, total_frames], Fortran order so each clip's frames
    are one contiguous block) and packed/{split}.index.json; returns total frames."""
    from tqdm import tqdm

    total = sum(e["frames"] for e in entries)
    header = {
        "descr": np.lib.format.dtype_to_descr(np.dtype(dtype)),
        "fortran_order": True,
        "shape": (num_mels, total),
    }
    ids, offsets, frames = [], [], []
    offset = 0
    with atomic_open(out / "packed" / f"{split}.npy", "wb") as f:
        np.lib.format.write_array_header_2_0(f, header)
        for e in tqdm(entries, desc=f"pack {split}", unit="clip", leave=False, disable=not progress):
            mel = np.load(out / split / f"{e['id']}.npy")
            f.write(np.ascontiguousarray(mel.T, dtype=dtype).tobytes())
            ids.append(e["id"])
            offsets.append(offset)
            frames.append(int(mel.shape[1]))
            offset += mel.shape[1]
    # Index after the array: an index always describes a complete array.
    write_json(out / "packed" / f"{split}.index.json",
               {"dtype": dtype, "num_mels": num_mels, "ids": ids, "offsets": offsets, "frames": frames})
    return total


# -- the whole run -------------------------------------------------------------------------
def make_config(preset: str = "universal", peak_normalize: bool = True) -> MelConfig:
    config = MelConfig.from_preset(preset)
    return config if peak_normalize else dataclasses.replace(config, peak_normalize=None)


def _check_options(options: Options, pack_dtype: str) -> None:
    # Checked here, not per file: a bad window would otherwise reject every file one by one.
    if not options.window_s > 0:
        raise UserError(f"--window_s {options.window_s}: must be a positive number of seconds")
    if options.hop_s is not None and not options.hop_s > 0:
        raise UserError(f"--hop_s {options.hop_s}: must be a positive number of seconds")
    if not options.min_partial_depth >= 0:
        raise UserError(f"--min_partial_depth {options.min_partial_depth}: must be 0 (off) or a positive depth in nats")
    if pack_dtype not in PACK_DTYPES:
        raise UserError(f"--pack_dtype {pack_dtype!r}: choose one of {PACK_DTYPES}")


def _prepare_output(out: Path, config: MelConfig) -> None:
    """The output folder with its split folders and mel_config.json (which must match)."""
    config_path = out / "mel_config.json"
    if config_path.is_file():
        require_match(MelConfig.load(config_path), config, str(config_path), "the requested --preset/flags")
    ensure_dir(out, "--output")
    for split in SPLITS:
        (out / split).mkdir(exist_ok=True)
    if not config_path.is_file():
        config.save(config_path)


@dataclasses.dataclass
class _Results:
    entries: list[dict]
    rejected: list[dict]
    stats: dict[str, Stats]
    curated: list[dict] = dataclasses.field(default_factory=list)
    computed: int = 0
    skipped: int = 0
    seconds: float = 0.0
    cpu: float = 0.0


def _run_jobs(jobs: list[Job], config: MelConfig, out: Path, options: Options, workers: int,
              desc: str, progress: bool) -> _Results:
    """Every job through _process, in this process or a fork pool; merged results and timing."""
    import torch
    from tqdm import tqdm

    from datasets.timing import cpu_seconds

    t0, c0 = time.perf_counter(), cpu_seconds()
    res = _Results([], [], {})
    workers = max(1, int(workers))
    init = (config, str(out), options)
    bar = tqdm(total=len(jobs), desc=desc, unit="file", disable=not progress)
    threads = torch.get_num_threads()
    if workers == 1:
        _worker_init(*init)  # sets one torch thread; restored below
        results, pool = map(_process, jobs), None
    else:
        pool = mp.get_context("fork").Pool(workers, initializer=_worker_init, initargs=init)
        chunk = max(1, min(32, len(jobs) // (workers * 8) or 1))
        results = pool.imap_unordered(_process, jobs, chunksize=chunk)
    try:
        for r in results:
            bar.update(1)
            res.entries += r["entries"]
            res.rejected += r["rejected"]
            res.curated += r["curated"]
            res.computed += r["computed"]
            res.skipped += r["skipped"]
            for split, st in r["stats"].items():
                res.stats.setdefault(split, Stats(config.num_mels)).merge(st)
    finally:
        bar.close()
        torch.set_num_threads(threads)
        if pool is not None:
            pool.close()
            pool.join()
    res.seconds = time.perf_counter() - t0
    res.cpu = cpu_seconds() - c0  # pool workers are joined, so their CPU time is counted
    return res


def _write_outputs(out: Path, input_dir: str | os.PathLike, config: MelConfig, res: _Results, pack: bool,
                   pack_dtype: str, progress: bool) -> dict:
    """manifest.jsonl, stats.json, rejected.jsonl and (with pack) packed/; returns packed frames."""
    res.entries.sort(key=lambda e: (SPLITS.index(e["split"]), e["id"]))
    ids = [e["id"] for e in res.entries]
    if len(set(ids)) != len(ids):
        dup = next(i for i in ids if ids.count(i) > 1)
        raise UserError(f"--input {input_dir}: two clips share the id {dup!r}; rename one source file")
    res.rejected.sort(key=lambda r: r["file"])
    res.curated.sort(key=lambda c: (SPLITS.index(c["split"]), c["id"]))
    total = Stats(config.num_mels)
    for st in res.stats.values():
        total.merge(st)
    stats_json = {
        **total.summary(per_bin=True),
        "mel_min": config.mel_min,
        "mel_max": config.mel_max,
        "splits": {s: res.stats[s].summary() for s in SPLITS if s in res.stats},
        # Manifest sources are relative to this folder (melcore.melset.source_roots reads it).
        "source_root": str(Path(input_dir).resolve()),
    }
    write_text(out / "manifest.jsonl", "".join(json.dumps(e, sort_keys=True) + "\n" for e in res.entries))
    write_json(out / "stats.json", stats_json)
    write_text(out / "rejected.jsonl", "".join(json.dumps(r, sort_keys=True) + "\n" for r in res.rejected))
    write_text(out / "curated.jsonl", "".join(json.dumps(c, sort_keys=True) + "\n" for c in res.curated))
    packed = {}
    if pack:
        for split in SPLITS:
            split_entries = [e for e in res.entries if e["split"] == split]
            if split_entries:
                packed[split] = pack_split(out, split, split_entries, config.num_mels, pack_dtype, progress)
    return packed


def _summary(mode: str, files: int, res: _Results, packed: dict) -> dict:
    n, seconds, cpu = len(res.entries), res.seconds, res.cpu
    return {
        "mode": mode,
        "files": files,
        "clips": n,
        "computed": res.computed,
        "skipped": res.skipped,
        "rejected": len(res.rejected),
        "rejected_files": res.rejected,
        "curated": len(res.curated),
        "splits": {s: sum(e["split"] == s for e in res.entries) for s in SPLITS},
        "seconds": seconds,
        "clips_per_s": n / seconds if seconds > 0 else float("inf"),
        "computed_per_s": res.computed / seconds if seconds > 0 else float("inf"),
        "cpu_seconds": cpu,
        "clips_per_cpu_s": n / cpu if cpu > 0 else float("inf"),
        "packed_frames": packed,
    }


def prepare(
    input_dir: str | os.PathLike,
    output_dir: str | os.PathLike,
    config: MelConfig | None = None,
    workers: int = 1,
    strict: bool = False,
    pack: bool = False,
    pack_dtype: str = "float16",
    options: Options | None = None,
    progress: bool = True,
) -> dict:
    """Prepare mels of every clip under `input_dir` into `output_dir`; returns the summary.

    Raises UserError for a missing input, a mel config that differs from the one already in
    `output_dir`, and (with strict) any rejected file, after all outputs are written.
    """
    config = config or make_config()
    options = options or Options()
    _check_options(options, pack_dtype)
    out = Path(output_dir)
    mode, jobs = collect_jobs(input_dir)
    with RunLock(out, "mel prep", flag="--output"):  # one prep per output folder
        _prepare_output(out, config)
        res = _run_jobs(jobs, config, out, options, workers, f"mels ({mode})", progress)
        packed = _write_outputs(out, input_dir, config, res, pack, pack_dtype, progress)
    if strict and res.rejected:
        raise UserError(
            f"--strict: {len(res.rejected)} input file(s) rejected, first {res.rejected[0]['file']}: "
            f"{res.rejected[0]['reason']}; see {out / 'rejected.jsonl'}"
        )
    return _summary(mode, len(jobs), res, packed)
