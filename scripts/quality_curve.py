#!/usr/bin/env python
"""Quality against CPU minutes of training: sample every saved EMA checkpoint of a run the same
way (whole notes, mel_sample.py's default sampler: DPM-Solver++(2M) SDE, 20 steps) and measure
each against the real-vs-real floor.

  python scripts/quality_curve.py --run runs/notes-long --real data/mels --classifier runs/demo/classifier \\
      --out runs/notes-long/curve [--num_samples 64] [--threads 1] [--every 2]

Writes OUT/curve.json (per checkpoint: step, training minutes, CPU minutes = minutes x
--threads, notes passing the note check, FD, median position: 0 = floor, 1 = noise), OUT/curve.png
and OUT/step_XXXXXX/ (samples, metrics.json). A rerun measures only the checkpoints it has not.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from melcore.process import configure_process  # noqa: E402

configure_process()  # before torch loads: libgomp reads OMP_WAIT_POLICY only then

from evaluation.curve import quality_curve  # noqa: E402
from improved_diffusion.samplers import DEFAULT_SAMPLER, SAMPLERS  # noqa: E402
from melcore.errors import cli_main  # noqa: E402


@cli_main
def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", required=True, help="mel_train.py run folder with its checkpoints")
    p.add_argument("--real", required=True, help="prepared real mel set (train = reference, valid+test = floor)")
    p.add_argument("--classifier", required=True, help="folder written by train_classifier.py")
    p.add_argument("--out", required=True, help="folder for curve.json, curve.png and each checkpoint's samples")
    p.add_argument("--num_samples", type=int, default=64, help="whole notes per checkpoint")
    p.add_argument("--sampler", choices=SAMPLERS, default=DEFAULT_SAMPLER,
                   help=f"sampler for every checkpoint (default {DEFAULT_SAMPLER}, mel_sample.py's)")
    p.add_argument("--steps", type=int, default=20, help="sampler model calls")
    p.add_argument("--threads", type=int, default=1, help="threads the training ran with (CPU minutes = wall x this)")
    p.add_argument("--every", type=int, default=1, help="measure every Nth checkpoint (the last always)")
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    curve = quality_curve(a.run, a.real, a.classifier, a.out, num_samples=a.num_samples, sampler=a.sampler,
                          sampler_steps=a.steps, seed=a.seed, threads=a.threads, every=a.every)
    print(f"{'step':>6s} {'CPU min':>8s} {'notes':>7s} {'FD':>8s} {'position':>8s}")
    for pt in curve["points"]:
        fd = f"{pt['fd']:8.1f}" if pt["fd"] is not None else f"{'-':>8s}"
        pos = f"{pt['position']:8.2f}" if pt["position"] is not None else f"{'-':>8s}"
        print(f"{pt['step']:6d} {pt['cpu_minutes'] or 0:8.1f} {pt['notes']}/{pt['n']:<5} {fd} {pos}")
    print(f"wrote {Path(a.out) / 'curve.json'} and curve.png")


if __name__ == "__main__":
    main()
