#!/usr/bin/env python
"""Train and evaluate named arms or a small grid of configurations at one budget (steps or wall time).

  python scripts/run_experiments.py --out runs/experiments --reuse runs/demo    # the preset: make experiments
  python scripts/run_experiments.py grid.json --out runs/grid
  python scripts/run_experiments.py --list                                    # the arms and the budget only
The grid format is described in evaluation/experiments.py (the preset: evaluation/presets/experiments.json);
writes one run dir per configuration plus summary.csv, summary.md, experiments.json (and report/) into --out.
Rerun the same command after a kill: finished runs are kept, unfinished ones resume.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from melcore.process import configure_process  # noqa: E402

configure_process()  # before torch loads: libgomp reads OMP_WAIT_POLICY only then

from evaluation.experiments import PRESET, budget_text, describe, expand, load_grid, run_grid  # noqa: E402
from melcore.checkpoint_io import add_trust_flag  # noqa: E402
from melcore.errors import UserError, cli_main  # noqa: E402


@cli_main
def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_trust_flag(p)
    p.add_argument("grid", nargs="?", default=str(PRESET), help="grid file (.json or .yaml; default: the preset)")
    p.add_argument("--out", default=None, help="folder for the run dirs and the summary (required unless --list)")
    p.add_argument("--max_steps", type=int, default=None, help="override the grid's step budget")
    p.add_argument("--max_train_seconds", type=float, default=None, help="override the grid's wall-time budget per run")
    p.add_argument("--reuse", default=None, help="a make demo folder whose NSynth-GM mels and classifier are reused")
    p.add_argument("--soundfont", default=None,
                   help="General MIDI SoundFont of the zero-shot set (default: an installed one; 'none': the held-out split)")
    p.add_argument("--list", "--dry_run", dest="list", action="store_true", help="print the runs and the budget, run nothing")
    a = p.parse_args(argv)
    grid = load_grid(a.grid)
    for key, value in (("max_steps", a.max_steps), ("max_train_seconds", a.max_train_seconds)):
        if value is not None:
            if value < 1:
                raise UserError(f"--{key}: must be positive")
            grid[key] = value
    if a.list:
        print(describe(grid, a.soundfont, a.reuse))
        return
    if not a.out:
        raise UserError("--out: required (the folder for the runs), e.g. --out runs/experiments")
    print(f"{len(expand(grid))} configurations, {budget_text(grid)} -> {a.out}")
    summary = run_grid(grid, a.out, progress=True, reuse=a.reuse, soundfont=a.soundfont)
    print((Path(a.out) / "summary.md").read_text(), end="")
    for sentence in summary["findings"]["sentences"]:
        print(sentence)
    for note in summary["did_not_work"]:
        print(f"did not work: {note}")
    if summary.get("report"):
        print(f"report: {summary['report']}")


if __name__ == "__main__":
    main()
