#!/usr/bin/env python
"""Diffusion losses (mse, vb, total), bits/dim and timestep-quartile breakdown of a checkpoint on
each split, raw and EMA weights; plus the run's training curves as PNG.

  python scripts/eval_losses.py --model_path runs/demo/run --data_dir runs/demo/mels \
      --out runs/demo/run/losses.json
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from melcore.process import configure_process  # noqa: E402

configure_process()  # before torch loads: libgomp reads OMP_WAIT_POLICY only then

from evaluation.losses import (  # noqa: E402
    SPLITS,
    checkpoint_losses,
    plot_curves,
    require_run_dir,
    zero_shot,
)
from melcore.atomic import write_json  # noqa: E402
from melcore.checkpoint_io import add_trust_flag  # noqa: E402
from melcore.errors import UserError, cli_main  # noqa: E402


@cli_main
def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_trust_flag(p)
    p.add_argument("--model_path", required=True, help="run dir (latest checkpoint) or a .pt inside one")
    p.add_argument("--data_dir", required=True, help="prepared mel set")
    p.add_argument("--out", default=None, help="JSON to write (default: <run dir>/losses.json)")
    p.add_argument("--splits", default=",".join(SPLITS))
    p.add_argument("--weights", default="raw,ema", help="raw, ema or both")
    p.add_argument("--limit", type=int, default=64, help="clips per split")
    p.add_argument("--bpd_limit", type=int, default=4,
                   help="clips per split through the full bound (diffusion_steps model calls each; 0 skips)")
    p.add_argument("--batch_size", type=int, default=16)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu")
    p.add_argument("--zero_shot", default=None, help="another mel set: also write zero_shot.json")
    p.add_argument("--samples", default=None, help="with --zero_shot: the model's samples for metrics")
    p.add_argument("--classifier", default=None, help="with --zero_shot: classifier dir for metrics")
    a = p.parse_args(argv)
    path = require_run_dir(a.model_path)
    run_dir = path if path.is_dir() else path.parent
    splits = tuple(s for s in a.splits.split(",") if s)
    weights = tuple(w for w in a.weights.split(",") if w)
    if not weights or set(weights) - {"raw", "ema"} or set(splits) - set(SPLITS):
        raise UserError(f"--weights {a.weights!r} / --splits {a.splits!r}: use raw,ema and {','.join(SPLITS)}")
    res = checkpoint_losses(path, a.data_dir, splits, weights, limit=a.limit, bpd_limit=a.bpd_limit,
                            batch_size=a.batch_size, seed=a.seed, device=a.device, trust=a.trust_checkpoint)
    curve = plot_curves(run_dir, run_dir / "curves.png")
    res["curves"] = curve.name if curve else None
    out = Path(a.out) if a.out else run_dir / "losses.json"
    write_json(out, res)
    for w, r in res["weights"].items():
        for split, v in r["splits"].items():
            if v is None:
                print(f"{w:3s} {split:5s} (empty split)")
                continue
            extra = f" bpd {v['bpd']:.4f}" if "bpd" in v else ""
            print(f"{w:3s} {split:5s} loss {v.get('loss', float('nan')):.4f} mse {v.get('mse', float('nan')):.4f}{extra}")
    print(f"wrote {out}")
    if a.zero_shot:
        split = splits[-1]
        z = zero_shot(path, a.data_dir, a.zero_shot, split, a.samples, a.classifier, limit=a.limit,
                      bpd_limit=a.bpd_limit, batch_size=a.batch_size, seed=a.seed, device=a.device, trust=a.trust_checkpoint)
        write_json(run_dir / "zero_shot.json", z)
        for side in ("own", "other"):
            v = z[side]
            print(f"zero-shot {side:5s} {v['data_dir']}: loss {v.get('loss', float('nan')):.4f} "
                  f"bpd {v.get('bpd', float('nan')):.4f}")
        print(f"wrote {run_dir / 'zero_shot.json'}")


if __name__ == "__main__":
    main()
