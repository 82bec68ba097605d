#!/usr/bin/env python
"""Train the evaluation classifier (pitch / instrument family / source) on a prepared mel set.

  python scripts/train_classifier.py --data_dir runs/demo/mels --out runs/demo/classifier
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from melcore.process import configure_process  # noqa: E402

configure_process()  # before torch loads: libgomp reads OMP_WAIT_POLICY only then

from evaluation.classifier import fit_classifier  # noqa: E402
from melcore.checkpoint_io import add_trust_flag  # noqa: E402
from melcore.errors import cli_main  # noqa: E402


@cli_main
def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_trust_flag(p)
    p.add_argument("--data_dir", required=True, help="prepared mel set (prep_mels.py output)")
    p.add_argument("--out", required=True, help="output folder for classifier.pt/.json")
    p.add_argument("--max_steps", type=int, default=1500)
    p.add_argument("--batch_size", type=int, default=32)
    p.add_argument("--crop_width", type=int, default=64)
    p.add_argument("--channels", type=int, default=32, help="first conv width (multiple of 8)")
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    acc = fit_classifier(a.data_dir, a.out, a.max_steps, a.batch_size, a.crop_width, a.channels, a.lr, a.seed)
    for split, heads in acc.items():
        shown = ", ".join(f"{k} {v:.3f}" if v is not None else f"{k} n/a" for k, v in heads.items())
        print(f"{split} accuracy: {shown}")


if __name__ == "__main__":
    main()
