"""Data-pipeline speed: NSynth-GM render notes/s, prep_mels clips/s, MelSet random loads/s.

Renders the tiny NSynth-GM set (a few dozen 4 s notes) into a temp folder, prepares its mels
with 1 and with N workers, packs them, and times random-access loads from the per-file and
the packed layouts. Ratios are within this one run (same machine, same load), finishing in
well under a minute on 2 CPU cores.

    python benchmarks/bench_data.py --json runs/bench/data.json
"""

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from datasets import nsynth_gm, prep  # noqa: E402
from datasets.timing import cpu_seconds  # noqa: E402
from melcore.atomic import write_json  # noqa: E402
from melcore.errors import cli_main  # noqa: E402
from melcore.melset import MelSet  # noqa: E402


def timed(fn, *args, **kwargs):
    c = cpu_seconds()
    out = fn(*args, **kwargs)
    return out, cpu_seconds() - c


def loads_per_s(ms: MelSet, n: int, seed: int = 0) -> float:
    order = np.random.default_rng(seed).integers(0, len(ms), n)
    ms.load(0)  # open the memory map / warm imports outside the timing
    t = time.perf_counter()
    for i in order:
        ms.load(int(i))
    return n / (time.perf_counter() - t)


@cli_main
def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--json", required=True, help="where to write the results")
    ap.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1))
    ap.add_argument("--loads", type=int, default=3000, help="random loads per layout")
    args = ap.parse_args(argv)

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        r, render_cpu = timed(nsynth_gm.build, tmp / "gm", "tiny", seed=0, workers=args.workers,
                              progress=False)
        # Warm-up: imports and the mel basis, so neither timed run pays for them.
        prep.prepare(tmp / "gm" / "nsynth-gm-test", tmp / "warm", workers=1, progress=False)
        one, one_cpu = timed(prep.prepare, tmp / "gm", tmp / "mels1", workers=1, progress=False)
        many = prep.prepare(tmp / "gm", tmp / "mels", workers=args.workers, pack=True, progress=False)
        resumed = prep.prepare(tmp / "gm", tmp / "mels", workers=args.workers, progress=False)
        files = MelSet(tmp / "mels", prefer_packed=False)
        packed = MelSet(tmp / "mels")
        assert packed.layout == "packed" and files.layout == "files"
        files_lps = loads_per_s(files, args.loads)
        packed_lps = loads_per_s(packed, args.loads)

    # Wall-clock numbers suffer when other jobs share the cores; CPU-time numbers do not:
    # `*_per_cpu_s` is the work per CPU second, x2 the ceiling on 2 dedicated cores.
    result = {
        "cpu_count": os.cpu_count(),
        "load_average_1min": os.getloadavg()[0],
        "workers": args.workers,
        "render_notes_per_cpu_s": r["planned"] / render_cpu,
        "render_notes": r["planned"],
        "render_notes_per_s": r["notes_per_s"],
        "prep_clips": many["clips"],
        "prep_clips_per_s_1_worker": one["clips_per_s"],
        "prep_clips_per_cpu_s": one["clips"] / one_cpu,
        "prep_clips_per_s": many["clips_per_s"],
        "prep_speedup_vs_1_worker": many["clips_per_s"] / one["clips_per_s"],
        "prep_resume_clips_per_s": resumed["clips_per_s"],
        "melset_loads_per_s_files": files_lps,
        "melset_loads_per_s_packed": packed_lps,
        "melset_packed_vs_files": packed_lps / files_lps,
    }
    write_json(args.json, result)
    for k, v in result.items():
        print(f"{k:32s} {v:.3g}" if isinstance(v, float) else f"{k:32s} {v}")


if __name__ == "__main__":
    main()
