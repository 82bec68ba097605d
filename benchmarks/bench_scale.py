"""Scale: prep throughput, MelSet open time, the training loader's first batch and resident memory
against the clip count (10k, 100k, 300k short clips), for the packed and the per-file layout.

Each size gets one synthetic mel set in prep_mels.py's layout (mel_config.json, stats.json,
manifest.jsonl with NSynth labels, {split}/<id>.npy float32 [80, 56..72 frames]; 90/5/5 split).
The packed layout is made from it by the real `datasets.prep.pack_split` (float16, like
`prep_mels.py --pack`) and moved into a second folder without the per-file mels, so MelSet can
only serve it packed. Every measurement runs in a fresh process (its own peak RSS):

- open: `MelSet(root)` over every clip (wall seconds, peak RSS);
- loader: `image_datasets.load_data` with the training defaults (batch_size, crop_width,
  num_workers) up to the first batch, then `--batches` more; peak RSS of the trainer process
  and the private (unshared) memory of each data-loader worker;
- prep: the real `datasets.prep.prepare` on `--prep_clips` synthetic 16 kHz WAV clips of the
  same length (prep of 300k clips would take most of an hour on 2 cores), timed at a quarter
  of that and in full; the two runs give a fixed and a per-clip part, extrapolated to every size.

Files are read through a warm page cache (the set was just written). Open cases run in a fresh
interpreter (numpy only); loader and prep cases in a child forked from one process that has
imported torch and the project, as a trainer has (no case pays the import, none sees another's
memory). Wall-clock numbers drift with other jobs' load: the 1-minute load average and the
process's CPU seconds are recorded beside every measurement.

    python benchmarks/bench_scale.py --json benchmarks/results/scale.json
    python benchmarks/bench_scale.py --sizes 10000 --layouts packed --work_dir /data/tmp --keep
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from benchmarks.common import PREFIX, ROOT, cpu_seconds, emit, peak_rss_mb, rss_mb  # noqa: E402
from melcore.errors import UserError, cli_main  # noqa: E402

LAYOUTS = ("packed", "files")
DEFAULT_SIZES = (10_000, 100_000, 300_000)
QUICK_SIZES = (200, 400)
FRAMES = (56, 72)  # clip lengths, inclusive: short clips that fit the default 64-frame crop
CLIP_SAMPLES = 12_000  # 0.75 s at 16 kHz: the prep clips (~ 64 frames at 22.05 kHz, hop 256)
SPLIT_SHARES = (("train", 0.9), ("valid", 0.05), ("test", 0.05))
BUILD_VERSION = 1  # bump when the synthetic set changes, so kept sets are rebuilt


# -- building the synthetic sets -------------------------------------------------------------
def _split_of(i: int, n: int) -> str:
    edge = 0.0
    for split, share in SPLIT_SHARES:
        edge += share
        if i < round(edge * n):
            return split
    return "test"


def _entry(i: int, split: str, frames: int) -> dict:
    # The fields prep writes for an NSynth clip, with plausible values (the parse cost is real).
    return {
        "id": f"synth_{i:07d}-{60 + i % 40:03d}-100",
        "split": split,
        "source": f"nsynth-synth-{split}/audio/synth_{i:07d}-{60 + i % 40:03d}-100.wav",
        "frames": frames,
        "pitch": 60 + i % 40,
        "velocity": 100,
        "instrument": i % 1000,
        "instrument_family": i % 11,
        "instrument_source": i % 3,
        "qualities": [int(b) for b in f"{i % 1024:010b}"],
    }


def build_files_set(root: Path, n: int, seed: int = 0, progress: bool = True) -> dict:
    """A per-file mel set of `n` clips in prep_mels.py's layout; returns its build timing."""
    from tqdm import tqdm

    from melcore.atomic import write_json, write_text
    from melcore.mel_config import MelConfig

    t0 = time.perf_counter()
    rng = np.random.default_rng(seed)
    # A pool of distinct mels sliced to each clip's length: the values do not change the speed.
    pool = rng.uniform(-11.0, 2.0, size=(64, 80, FRAMES[1])).astype(np.float32)
    lengths = rng.integers(FRAMES[0], FRAMES[1] + 1, size=n)
    root.mkdir(parents=True, exist_ok=True)
    MelConfig().save(root / "mel_config.json")
    for split, _ in SPLIT_SHARES:
        (root / split).mkdir(exist_ok=True)
    entries = []
    for i in tqdm(range(n), desc=f"build {n:,} clips", unit="clip", leave=False, disable=not progress):
        split = _split_of(i, n)
        e = _entry(i, split, int(lengths[i]))
        np.save(root / split / f"{e['id']}.npy", pool[i % len(pool), :, : e["frames"]])
        entries.append(e)
    entries.sort(key=lambda e: ([s for s, _ in SPLIT_SHARES].index(e["split"]), e["id"]))
    write_text(root / "manifest.jsonl", "".join(json.dumps(e, sort_keys=True) + "\n" for e in entries))
    write_json(root / "stats.json", {"clips": n, "frames": int(lengths.sum()), "source_root": str(root)})
    return {"build_s": time.perf_counter() - t0, "frames": int(lengths.sum())}


def pack_set(files_root: Path, packed_root: Path, progress: bool = True) -> float:
    """The packed layout of `files_root` in `packed_root` (manifest, config, stats, packed/),
    written by the real pack_split; returns its seconds."""
    from datasets.prep import pack_split
    from melcore.melset import read_manifest

    t0 = time.perf_counter()
    entries = read_manifest(files_root / "manifest.jsonl")
    for split, _ in SPLIT_SHARES:
        rows = [e for e in entries if e["split"] == split]
        if rows:
            pack_split(files_root, split, rows, 80, "float16", progress)
    seconds = time.perf_counter() - t0
    packed_root.mkdir(parents=True, exist_ok=True)
    for name in ("manifest.jsonl", "mel_config.json", "stats.json"):
        shutil.copy2(files_root / name, packed_root / name)
    shutil.rmtree(packed_root / "packed", ignore_errors=True)
    os.replace(files_root / "packed", packed_root / "packed")
    return seconds


def build_sets(work: Path, n: int, layouts: list[str], progress: bool) -> dict:
    """files/ and (when asked) packed/ sets of `n` clips under work/n{n}; reused when a kept
    set of the same size and version is there (`built.json` is written last)."""
    base = work / f"n{n}"
    marker = base / "built.json"
    if marker.is_file():
        info = json.loads(marker.read_text())
        if info.get("version") == BUILD_VERSION and info.get("clips") == n and (
            "packed" not in layouts or info.get("pack_s") is not None
        ):
            return {**info, "reused": True}
    shutil.rmtree(base, ignore_errors=True)
    info = {"version": BUILD_VERSION, "clips": n, **build_files_set(base / "files", n, progress=progress)}
    info["pack_s"] = pack_set(base / "files", base / "packed", progress) if "packed" in layouts else None
    marker.write_text(json.dumps(info))
    return {**info, "reused": False}


def write_prep_audio(folder: Path, n: int, seed: int = 0) -> None:
    """`n` 0.75 s 16 kHz WAV tones with a little noise (none silent), as prep's input."""
    from melcore.audio import write_wav

    rng = np.random.default_rng(seed)
    t = np.arange(CLIP_SAMPLES) / 16_000
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        y = 0.5 * np.sin(2 * np.pi * (110 + i % 400) * t) + 0.01 * rng.standard_normal(t.size)
        write_wav(folder / f"clip{i:06d}.wav", y, 16_000, fsync=False)


# -- the measurements, each in its own process ------------------------------------------------
def _worker_memory_mb(pid: int) -> dict:
    """A process's resident and private (not shared with its parent) memory, MB."""
    out = {}
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            key, _, rest = line.partition(":")
            if key in ("Rss", "Private_Clean", "Private_Dirty"):
                out[key] = float(rest.split()[0]) / 1024
    except OSError:
        return {}
    return {"rss_mb": out.get("Rss", 0.0), "private_mb": out.get("Private_Clean", 0.0) + out.get("Private_Dirty", 0.0)}


def _loader_workers(loader) -> list[int]:
    # torch's multi-process iterator keeps its worker processes in `_workers`.
    return [w.pid for w in getattr(loader._it, "_workers", [])]


def case_open(root: str) -> dict:
    from melcore.melset import MelSet

    start = rss_mb()
    t0, c0 = time.perf_counter(), cpu_seconds()
    ms = MelSet(root)
    open_s, open_cpu_s = time.perf_counter() - t0, cpu_seconds() - c0
    t0 = time.perf_counter()
    ms.load(len(ms) - 1)
    return {"open_s": open_s, "open_cpu_s": open_cpu_s, "first_load_s": time.perf_counter() - t0,
            "clips": len(ms),
            "layout": ms.layout, "start_rss_mb": start, "peak_rss_mb": peak_rss_mb()}


def case_loader(root: str, batches: int) -> dict:
    import torch  # noqa: F401  (imported before the clock starts, as the trainer has it)

    from improved_diffusion.image_datasets import load_data
    from improved_diffusion.script_util import model_and_diffusion_defaults, training_defaults

    md, td = model_and_diffusion_defaults(), training_defaults()
    start = rss_mb()
    t0, c0 = time.perf_counter(), cpu_seconds()
    loader = load_data(data_dir=root, batch_size=td["batch_size"], crop_width=md["crop_width"],
                       class_cond=md["class_cond"], num_workers=td["num_workers"], seed=td["seed"])
    x, _ = next(loader)
    # CPU of the trainer process only: the workers' share is theirs (forked, still running).
    first_s, first_cpu_s = time.perf_counter() - t0, cpu_seconds() - c0
    first = [_worker_memory_mb(p) for p in _loader_workers(loader)]
    t0 = time.perf_counter()
    for _ in range(batches):
        next(loader)
    more_s = time.perf_counter() - t0
    later = [_worker_memory_mb(p) for p in _loader_workers(loader)]
    loader.close()
    return {
        "first_batch_s": first_s, "first_batch_cpu_s": first_cpu_s, "batch_shape": list(x.shape), "clips": len(loader.dataset.melset),
        "num_workers": td["num_workers"], "batches_after_first": batches,
        "batches_per_s": batches / more_s if more_s > 0 else None,
        "start_rss_mb": start, "peak_rss_mb": peak_rss_mb(),
        "worker_private_mb_first": sum(w.get("private_mb", 0.0) for w in first),
        "worker_private_mb": sum(w.get("private_mb", 0.0) for w in later),
        "worker_rss_mb": sum(w.get("rss_mb", 0.0) for w in later),
    }


def case_prep(audio: str, out: str, workers: int) -> dict:
    from datasets.prep import Options, prepare

    start = rss_mb()
    r = prepare(audio, out, workers=workers, options=Options(window_s=CLIP_SAMPLES / 16_000),
                progress=False)
    return {"clips": r["clips"], "rejected": r["rejected"], "seconds": r["seconds"],
            "clips_per_s": r["clips_per_s"], "clips_per_cpu_s": r["clips_per_cpu_s"],
            "workers": workers, "start_rss_mb": start, "peak_rss_mb": peak_rss_mb()}


def _result(lines, stderr_tail: str, what: str) -> dict:
    for line in lines:
        if line.startswith(PREFIX):
            msg = json.loads(line[len(PREFIX):])
            if msg["kind"] == "result":
                return msg["data"]
            break
        sys.stderr.write(line)
    sys.stderr.write(stderr_tail)
    raise RuntimeError(f"bench_scale case {what} failed (see the messages above)")


class Zygote:
    """A process that has imported torch and the project once and forks one fresh child per
    measurement: each child starts from the same state (its own peak RSS, from the fork) and
    no measurement pays the ~2 CPU seconds of importing torch again."""

    def __init__(self):
        self.proc = subprocess.Popen([sys.executable, str(Path(__file__).resolve()), "--_case", "serve"],
                                     cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)

    def run(self, argv: list[str]) -> dict:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(json.dumps(argv) + "\n")
        self.proc.stdin.flush()
        return _result(self.proc.stdout, "", argv[0])

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.stdin.close()
            self.proc.wait(timeout=60)


def serve() -> None:
    """The zygote's loop: one JSON argv a line on stdin, each run in a forked child."""
    import torch  # noqa: F401  (the imports every child shares)

    import datasets.prep  # noqa: F401
    import hifigan.meldataset  # noqa: F401
    import improved_diffusion.image_datasets  # noqa: F401
    import improved_diffusion.script_util  # noqa: F401

    for line in sys.stdin:
        argv = json.loads(line)
        sys.stdout.flush()
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                _case_main(argv)
                code = 0
            except BaseException:
                import traceback

                traceback.print_exc()
                emit("error")
            finally:
                sys.stdout.flush()
                os._exit(code)
        os.waitpid(pid, 0)


def run_case(argv: list[str], zygote: Zygote | None = None) -> dict:
    """One measurement in a fresh process (a fresh interpreter, or a child forked from the
    zygote); its result and the 1-minute load average around it."""
    load = os.getloadavg()[0]
    if zygote is not None:
        result = zygote.run(argv)
    else:
        proc = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--_case", *argv],
                              cwd=ROOT, capture_output=True, text=True)
        result = _result(proc.stdout.splitlines(keepends=True), proc.stderr[-4000:], argv[0])
    return {**result, "load_average_1min": round(max(load, os.getloadavg()[0]), 2)}


# -- the table --------------------------------------------------------------------------------
def markdown(result: dict) -> str:
    """The README/RESULTS.md table: one row per clip count and layout."""
    head = ["clips", "layout", "MelSet open s (CPU s)", "open peak RSS MB", "first batch s (CPU s)",
            "loader peak RSS MB", "workers' private MB", "pack s", "prep s (extrapolated)",
            "load avg"]
    rows = []
    for r in result["rows"]:
        o, ld = r.get("open", {}), r.get("loader", {})
        rows.append([f"{r['clips']:,}", r["layout"], f"{_f(o.get('open_s'))} ({_f(o.get('open_cpu_s'))})",
                     _f(o.get("peak_rss_mb"), 0),
                     f"{_f(ld.get('first_batch_s'))} ({_f(ld.get('first_batch_cpu_s'))})",
                     _f(ld.get("peak_rss_mb"), 0),
                     _f(ld.get("worker_private_mb"), 0), _f(r.get("pack_s")),
                     _f(r.get("prep_s_extrapolated"), 0),
                     f"{o.get('load_average_1min', '-')}/{ld.get('load_average_1min', '-')}"])
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    p = result.get("prep")
    if p:
        runs = ", ".join(f"{q['clips']:,} clips {q['clips_per_s']:.0f}/s" for q in p["runs"])
        lines += ["", f"Prep (real `datasets.prep.prepare`, {p['workers']} workers, 0.75 s clips): {runs} "
                      f"(load avg {p['load_average_1min']}); the sizes above extrapolated as "
                      f"{p['fixed_s']:.1f} s + clips / {p['marginal_clips_per_s']:.0f} per s."]
    return "\n".join(lines) + "\n"


def _f(x, digits: int = 2) -> str:
    return "-" if x is None else f"{x:,.{digits}f}"


# -- the command ------------------------------------------------------------------------------
def _ints(text: str) -> list[int]:
    try:
        out = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise UserError(f"--sizes {text!r}: give clip counts separated by commas") from None
    if not out or min(out) < 20:
        raise UserError(f"--sizes {text!r}: every size must be at least 20 clips")
    return out


def _layouts(text: str) -> list[str]:
    out = [s.strip() for s in text.split(",") if s.strip()]
    bad = [s for s in out if s not in LAYOUTS]
    if bad or not out:
        raise UserError(f"--layouts {text!r}: choose from {', '.join(LAYOUTS)} (comma separated)")
    return out


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--json", default=None, help="write the results here (JSON)")
    ap.add_argument("--sizes", default=",".join(map(str, DEFAULT_SIZES)), help="clip counts, comma separated")
    ap.add_argument("--layouts", default=",".join(LAYOUTS), help="packed, files or both (comma separated)")
    ap.add_argument("--work_dir", default=None, help="build the sets here (default: a temp folder)")
    ap.add_argument("--keep", action="store_true", help="keep the sets (a rerun with --work_dir reuses them)")
    ap.add_argument("--prep_clips", type=int, default=2000, help="clips the prep rate is measured on (0: skip)")
    ap.add_argument("--prep_workers", type=int, default=os.cpu_count() or 1, help="prep processes (prep_mels.py's default)")
    ap.add_argument("--batches", type=int, default=200, help="batches drawn after the first (worker memory)")
    ap.add_argument("--quick", action="store_true", help="sizes 200,400, 40 prep clips (tests)")
    ap.add_argument("--quiet", action="store_true", help="no progress bar")
    ap.add_argument("--_case", nargs="+", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.quick:
        args.sizes, args.prep_clips, args.batches = ",".join(map(str, QUICK_SIZES)), min(args.prep_clips, 40), 20
    return args


def _case_main(argv: list[str]) -> None:
    kind, rest = argv[0], argv[1:]
    if kind == "open":
        emit("result", case_open(rest[0]))
    elif kind == "loader":
        emit("result", case_loader(rest[0], int(rest[1])))
    elif kind == "prep":
        emit("result", case_prep(rest[0], rest[1], int(rest[2])))
    elif kind == "serve":
        serve()
    else:
        raise UserError(f"--_case {kind}: unknown")


def measure(args: argparse.Namespace, work: Path) -> dict:
    zygote = Zygote()
    try:
        return _measure(args, work, zygote)
    finally:
        zygote.close()


def _measure(args: argparse.Namespace, work: Path, zygote: Zygote) -> dict:
    from tqdm import tqdm

    sizes, layouts = _ints(args.sizes), _layouts(args.layouts)
    prep_sizes = sorted({max(4, args.prep_clips // 4), args.prep_clips}) if args.prep_clips > 0 else []
    bar = tqdm(total=len(prep_sizes) + len(sizes) * (1 + 2 * len(layouts)), desc="bench_scale",
               unit="step", disable=args.quiet)
    prep = None
    if prep_sizes:
        runs = []
        for n in prep_sizes:
            bar.set_postfix_str(f"prep {n:,}")
            write_prep_audio(work / f"prep{n}" / "audio", n)
            runs.append(run_case(["prep", str(work / f"prep{n}" / "audio"), str(work / f"prep{n}" / "mels"),
                                  str(args.prep_workers)], zygote))
            shutil.rmtree(work / f"prep{n}", ignore_errors=True)
            bar.update()
        prep = {"runs": runs, "workers": args.prep_workers, "clips_per_s": runs[-1]["clips_per_s"],
                "load_average_1min": max(r["load_average_1min"] for r in runs), **prep_fit(runs)}
    rows = []
    for n in sizes:
        bar.set_postfix_str(f"build {n:,}")
        info = build_sets(work, n, layouts, progress=not args.quiet)
        bar.update()
        for layout in layouts:
            root = str(work / f"n{n}" / layout)
            row = {"clips": n, "layout": layout, "build_s": info["build_s"], "reused_set": info["reused"],
                   "pack_s": info["pack_s"] if layout == "packed" else None,
                   "prep_s_extrapolated": prep["fixed_s"] + n / prep["marginal_clips_per_s"] if prep else None}
            bar.set_postfix_str(f"{layout} {n:,} open")
            row["open"] = run_case(["open", root])
            bar.update()
            bar.set_postfix_str(f"{layout} {n:,} loader")
            row["loader"] = run_case(["loader", root, str(args.batches)], zygote)
            bar.update()
            rows.append(row)
        if not args.keep:
            shutil.rmtree(work / f"n{n}", ignore_errors=True)
    bar.close()
    return {"sizes": sizes, "layouts": layouts, "prep": prep, "rows": rows,
            "goals": goals(rows), "quick": args.quick, "cpu_count": os.cpu_count(),
            "frames_per_clip": list(FRAMES), "page_cache": "warm (sets read right after writing)"}


def prep_fit(runs: list[dict]) -> dict:
    """seconds = fixed + clips / marginal rate, through the smallest and the largest run (the
    fixed part: pool start, imports, writing manifest and stats); one run: no fixed part."""
    a, b = runs[0], runs[-1]
    if b["clips"] > a["clips"] and b["seconds"] > a["seconds"]:
        marginal = (b["clips"] - a["clips"]) / (b["seconds"] - a["seconds"])
        fixed = max(0.0, b["seconds"] - b["clips"] / marginal)
    else:
        marginal, fixed = b["clips_per_s"], 0.0
    return {"marginal_clips_per_s": marginal, "fixed_s": fixed}


def goals(rows: list[dict]) -> dict:
    """The issue's goals, judged on the largest packed set measured (empty: none measured)."""
    packed = [r for r in rows if r["layout"] == "packed"]
    if not packed:
        return {}
    big = max(packed, key=lambda r: r["clips"])
    o, ld = big["open"], big["loader"]
    return {"clips": big["clips"], "open_s": o["open_s"], "open_peak_rss_mb": o["peak_rss_mb"],
            "first_batch_s": ld["first_batch_s"], "open_under_10_s": o["open_s"] < 10,
            "open_under_1_gb": o["peak_rss_mb"] < 1024, "first_batch_under_30_s": ld["first_batch_s"] < 30}


@cli_main
def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args._case:
        _case_main(args._case)
        return
    _ints(args.sizes), _layouts(args.layouts)  # flag errors before any work
    if args.work_dir or args.keep:
        # --keep without --work_dir: a temp folder that is left in place (its path is printed).
        work = Path(args.work_dir or tempfile.mkdtemp(prefix="bench_scale."))
        work.mkdir(parents=True, exist_ok=True)
        result = measure(args, work)
        if args.keep:
            print(f"kept the sets in {work}", file=sys.stderr)
    else:
        with tempfile.TemporaryDirectory(prefix="bench_scale.") as tmp:
            result = measure(args, Path(tmp))
    from benchmarks.common import write_result

    write_result(args.json, result)
    print(markdown(result), file=sys.stderr)


if __name__ == "__main__":
    main()
