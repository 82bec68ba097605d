#!/usr/bin/env python
"""Train and evaluate a small grid of configurations at a fixed step budget.

  python scripts/run_experiments.py grid.json --out runs/demo/experiments
The grid format is described in evaluation/experiments.py; writes one run dir per
configuration plus summary.csv, summary.md and experiments.json into --out.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from melcore.process import configure_process  # noqa: E402

configure_process()  # before torch loads: libgomp reads OMP_WAIT_POLICY only then

from evaluation.experiments import expand, load_grid, run_grid  # noqa: E402
from melcore.checkpoint_io import add_trust_flag  # noqa: E402
from melcore.errors import UserError, cli_main  # noqa: E402


@cli_main
def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_trust_flag(p)
    p.add_argument("grid", help="grid file (.json or .yaml)")
    p.add_argument("--out", required=True, help="folder for the run dirs and the summary")
    p.add_argument("--max_steps", type=int, default=None, help="override the grid's step budget")
    a = p.parse_args(argv)
    grid = load_grid(a.grid)
    if a.max_steps is not None:
        if a.max_steps < 1:
            raise UserError("--max_steps: must be positive")
        grid["max_steps"] = a.max_steps
    print(f"{len(expand(grid))} configurations, {grid['max_steps']} steps each -> {a.out}")
    summary = run_grid(grid, a.out, progress=True)
    print((Path(a.out) / "summary.md").read_text(), end="")
    for note in summary["did_not_work"]:
        print(f"did not work: {note}")


if __name__ == "__main__":
    main()
