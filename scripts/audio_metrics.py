#!/usr/bin/env python
"""Audio metrics of generated mels against a prepared real set, beside the real-vs-real floor,
noise and the data's mean spectrum, all at the same N, with the note share and a verdict.

  python scripts/audio_metrics.py --real runs/demo/mels --generated runs/demo/samples \
      --classifier runs/demo/classifier --out runs/demo/metrics.json
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from melcore.process import configure_process  # noqa: E402

configure_process()  # before torch loads: libgomp reads OMP_WAIT_POLICY only then

from evaluation.findings import copy_sentence, verdict, verdict_sentence  # noqa: E402
from evaluation.metrics import DEFAULT_N, ROWS, run_audio_metrics  # noqa: E402
from melcore.checkpoint_io import add_trust_flag  # noqa: E402
from melcore.errors import cli_main  # noqa: E402


def _cell(v) -> str:
    return f"{v:10.4g}" if isinstance(v, float) else f"{'-':>10s}"


@cli_main
def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_trust_flag(p)
    p.add_argument("--real", required=True, help="prepared real mel set (train = reference)")
    p.add_argument(
        "--generated", required=True, help="folder of mel .npy + mel_config.json, or a mel set"
    )
    p.add_argument("--classifier", required=True, help="folder written by train_classifier.py")
    p.add_argument("--out", required=True, help="metrics JSON to write")
    p.add_argument("--k", type=int, default=50, help="NDB bins (reduced when too few real clips)")
    p.add_argument(
        "--limit",
        type=int,
        default=DEFAULT_N,
        help=f"use at most this many generated mels (default {DEFAULT_N}; the floor uses as many)",
    )
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    m = run_audio_metrics(
        a.real, a.generated, a.classifier, a.out, k=a.k, limit=a.limit, seed=a.seed
    )
    print(f"{'metric':14s} " + " ".join(f"{r:>13s}" for r in ROWS) + "  floor_sd  discriminative")
    for key, e in m["scalars"].items():
        cells = " ".join(f"{_cell(e[r]):>13s}" for r in ROWS)
        print(f"{key:14s} {cells} {_cell(e['floor_sd'])}  {'yes' if e['discriminative'] else 'no'}")
    print(verdict_sentence(m, verdict(m)))
    copies = copy_sentence(m.get("nearest_train"))
    if copies:
        print(copies)
    for note in m["notes"]:
        print(f"note: {note}")
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
