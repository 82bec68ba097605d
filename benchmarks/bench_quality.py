#!/usr/bin/env python
"""Time to quality: upstream improved-diffusion's recipe vs the project's notes recipe, trained
for the same wall time on the same data (same UNet size), sampled and measured the same way.

  python benchmarks/bench_quality.py [--seconds 600] [--out runs/bench_quality] [--reuse runs/demo]

The two arms are make experiments' `upstream` and `notes` (evaluation/presets/experiments.json),
run by the same code (evaluation.experiments.run_grid): 64 whole-note samples each with the
default sampler, metrics against the real-vs-real floor and noise, the per-sample note check.
Writes benchmarks/results/quality.json: per arm the steps reached, training seconds, median
position (0 = the floor, 1 = noise), FD and the note share. Reruns resume (finished arms are
kept). State the machine's load beside the numbers: arms compete for the same cores.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from melcore.process import configure_process  # noqa: E402

configure_process()

from melcore.errors import UserError, cli_main  # noqa: E402

ARMS = ("upstream", "notes")
RESULT = Path(__file__).resolve().parent / "results" / "quality.json"


def quality_grid(seconds: float, num_samples: int) -> dict:
    """The experiments preset cut to the two arms, at `seconds` of training each."""
    from evaluation.experiments import PRESET, load_grid

    grid = load_grid(PRESET)
    grid["arms"] = {name: grid["arms"][name] for name in ARMS}
    grid["max_train_seconds"] = seconds
    grid["num_samples"] = num_samples
    grid.pop("zero_shot", None)  # time to quality on the training distribution only
    return grid


def quality_table(summary: dict) -> dict:
    """Per arm: steps, training seconds, position, FD, note share (from experiments' rows)."""
    arms = {}
    for row in summary.get("rows", []):
        arms[row["name"]] = {k: row.get(k) for k in ("status", "step", "train_s", "position", "fd", "notes")}
    up, notes = arms.get("upstream", {}), arms.get("notes", {})
    ahead = None
    if isinstance(up.get("position"), (int, float)) and isinstance(notes.get("position"), (int, float)):
        ahead = notes["position"] < up["position"]
    return {"arms": arms, "notes_recipe_ahead": ahead, "findings": summary.get("findings", {}).get("sentences", [])}


@cli_main
def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seconds", type=float, default=600.0, help="training wall time per arm")
    p.add_argument("--num_samples", type=int, default=64, help="generated notes per arm")
    p.add_argument("--out", default="runs/bench_quality", help="run folder (resumable)")
    p.add_argument("--reuse", default="runs/demo", help="a make demo folder whose mels and classifier are reused")
    p.add_argument("--json", default=str(RESULT), help="where the result JSON goes")
    p.add_argument("--list", action="store_true", help="print the two arms and the budget, run nothing")
    a = p.parse_args(argv)
    if a.seconds <= 0 or a.num_samples < 1:
        raise UserError("--seconds and --num_samples must be positive")
    grid = quality_grid(a.seconds, a.num_samples)
    from evaluation.experiments import describe, run_grid
    from melcore.atomic import write_json

    if a.list:
        print(describe(grid, "none", a.reuse))
        return
    reuse = a.reuse if a.reuse and os.path.isdir(a.reuse) else None
    summary = run_grid(grid, a.out, progress=True, reuse=reuse, soundfont="none", report=False)
    result = {"seconds_per_arm": a.seconds, "load_average": list(os.getloadavg()), **quality_table(summary)}
    write_json(a.json, result)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
