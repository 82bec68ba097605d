#!/usr/bin/env python
"""Audio metrics of generated mels against a prepared real set, with the real-vs-real floor.

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

from evaluation.metrics import run_audio_metrics  # noqa: E402
from melcore.checkpoint_io import add_trust_flag  # noqa: E402
from melcore.errors import cli_main  # noqa: E402


@cli_main
def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_trust_flag(p)
    p.add_argument("--real", required=True, help="prepared real mel set (train = reference)")
    p.add_argument("--generated", required=True, help="folder of mel .npy + mel_config.json, or a mel set")
    p.add_argument("--classifier", required=True, help="folder written by train_classifier.py")
    p.add_argument("--out", required=True, help="metrics JSON to write")
    p.add_argument("--k", type=int, default=50, help="NDB bins (reduced when too few real clips)")
    p.add_argument("--limit", type=int, default=None, help="use at most this many generated mels")
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    m = run_audio_metrics(a.real, a.generated, a.classifier, a.out, k=a.k, limit=a.limit, seed=a.seed)
    floor = m["floor"] or {}
    for key in ("fd", "is_pitch", "is_family", "pitch_entropy", "ndb_k"):
        f = floor.get(key)
        print(f"{key:14s} {m[key]:10.4f}   floor {f:10.4f}" if f is not None else f"{key:14s} {m[key]:10.4f}")
    for note in m["notes"]:
        print(f"note: {note}")
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
