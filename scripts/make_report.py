#!/usr/bin/env python
"""Write a self-contained report (index.html + assets/ + report.md) from one or more run dirs.

  python scripts/make_report.py runs/demo/run --experiments runs/demo/experiments --out runs/demo/report
Reads what the other scripts leave in each run dir (losses.json, metrics.json, samples/,
interp/, variations/, zero_shot.json, progress.csv); anything missing shows "not computed".
The findings (a verdict per run and "what did not work") also go to report.json.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from melcore.process import configure_process  # noqa: E402

configure_process()  # before torch loads: libgomp reads OMP_WAIT_POLICY only then

from evaluation.report import make_report  # noqa: E402
from melcore.checkpoint_io import add_trust_flag  # noqa: E402
from melcore.errors import cli_main  # noqa: E402


@cli_main
def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_trust_flag(p)
    p.add_argument("run_dirs", nargs="+", help="run dirs written by mel_train.py")
    p.add_argument("--out", required=True, help="report folder")
    p.add_argument("--data_dir", default=None, help="mel set (default: data_dir in the first run's args.json)")
    p.add_argument("--experiments", default=None, help="folder written by run_experiments.py")
    p.add_argument("--audio_root", default=None, help="folder the mel set's source clips are relative to")
    p.add_argument("--examples", type=int, default=4, help="clips per row")
    p.add_argument("--no_copy_synthesis", action="store_true", help="do not vocode real mels")
    p.add_argument("--griffin_lim", action="store_true", help="copy-synthesis with Griffin-Lim")
    p.add_argument("--copy_synthesis", default=None,
                   help="results.json (or its folder) of copy_synthesis.py: flags a vocoder worse than Griffin-Lim")
    a = p.parse_args(argv)
    index = make_report(a.run_dirs, a.out, a.data_dir, a.experiments, a.audio_root, a.examples,
                        vocode_real=not a.no_copy_synthesis, griffin_lim=a.griffin_lim,
                        copy_synthesis_results=a.copy_synthesis)
    print(f"wrote {index}, {index.parent / 'report.pdf'}, {index.parent / 'report.md'} and {index.parent / 'report.json'}")


if __name__ == "__main__":
    main()
