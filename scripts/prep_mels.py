"""Clips -> a prepared mel set: {train,valid,test}/<id>.npy + manifest.jsonl + mel_config.json
+ stats.json + rejected.jsonl + curated.jsonl (docs/DESIGN.md).

    python scripts/prep_mels.py --input data/nsynth-gm --output data/mels --workers 2
    python scripts/prep_mels.py --input ~/maestro --output data/maestro-mels --window_s 4 --pack

--input is an NSynth-layout root (nsynth*-{train,valid,test} folders, or one of them) or any
folder of audio files (cut into windows, split by file). A rerun resumes.
"""

import argparse
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from melcore.process import configure_process  # noqa: E402

configure_process()  # before torch loads: libgomp reads OMP_WAIT_POLICY only then

from datasets.prep import PACK_DTYPES, Options, make_config, prepare  # noqa: E402
from melcore.errors import cli_main  # noqa: E402
from melcore.mel_config import PRESETS  # noqa: E402


@cli_main
def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--input", required=True, help="NSynth-layout root or folder of audio")
    ap.add_argument("--output", required=True, help="mel set folder (created; reruns resume)")
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--preset", choices=sorted(PRESETS), default="universal")
    ap.add_argument("--no_peak_normalize", action="store_true",
                    help="keep recorded levels (mel_config peak_normalize: null)")
    ap.add_argument("--strict", action="store_true", help="any rejected input file is an error (exit 2)")
    ap.add_argument("--pack", action="store_true",
                    help="also write packed/{split}.npy + index for fast random access")
    ap.add_argument("--pack_dtype", choices=PACK_DTYPES, default="float16")
    ap.add_argument("--window_s", type=float, default=4.0, help="audio folders: clip length")
    ap.add_argument("--hop_s", type=float, default=None, help="audio folders: hop (default window)")
    ap.add_argument("--min_rms_db", type=float, default=-50.0,
                    help="audio folders: drop windows quieter than this (dBFS RMS)")
    ap.add_argument("--min_partial_depth", type=float, default=0.0,
                    help="curate: leave out clips whose held partials are shallower than this, in nats "
                         "(datasets.curation; 0, the default, keeps every clip; 0.35 on NSynth-GM drops its "
                         "broadband washes, about 10%% of the training notes, but mostly low notes, so the "
                         "demo does not curate: docs/RECIPE.md)")
    ap.add_argument("--quiet", action="store_true", help="no progress bars")
    args = ap.parse_args(argv)

    config = make_config(args.preset, not args.no_peak_normalize)
    opts = Options(args.window_s, args.hop_s, args.min_rms_db, args.min_partial_depth)
    try:
        r = prepare(args.input, args.output, config, args.workers, args.strict, args.pack,
                    args.pack_dtype, opts, progress=not args.quiet)
    finally:
        sys.stdout.flush()
    s = r["splits"]
    print(f"{r['clips']} clips from {r['files']} {r['mode']} files (train {s['train']}, valid "
          f"{s['valid']}, test {s['test']}): {r['computed']} computed, {r['skipped']} already "
          f"done, {r['rejected']} rejected, {r['curated']} curated out; {r['clips_per_s']:.0f} clips/s "
          f"({r['computed_per_s']:.0f} computed/s, {r['clips_per_cpu_s']:.0f} per CPU-second) "
          f"in {r['seconds']:.1f} s -> {args.output}")
    for rej in r["rejected_files"][:10]:
        print(f"  rejected {rej['file']}: {rej['reason']}")
    if r["rejected"] > 10:
        print(f"  ... see {Path(args.output) / 'rejected.jsonl'}")
    if r["packed_frames"]:
        print("packed frames:", r["packed_frames"])


if __name__ == "__main__":
    main()
