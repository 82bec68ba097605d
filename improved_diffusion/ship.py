"""Package one EMA checkpoint of a mel_train.py run as a shipped model: improved_diffusion/weights/<name>/.

  python -m improved_diffusion.ship --run runs/notes-long --name notes-unet-v1 --fp16 \\
      --command "python scripts/mel_train.py ..." --data "NSynth-GM small, train split" \\
      [--curve runs/notes-long/curve/curve.json] [--step N]

Writes, atomically, the run's EMA weights at the latest (or --step) checkpoint (fp16 with
--fp16: half the size), its args.json (without this machine's paths) and a training.json
(command, data, steps, seed, training time and the measured quality curve). The folder samples
like a run folder, and by name on any clone: `mel_sample.py --model_path notes-unet-v1`.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from improved_diffusion.checkpoint import (
    ARGS_FILE,
    WEIGHTS_DIR,
    complete_steps,
    ema_name,
    parse_rates,
    read_args,
    train_seconds_at,
    write_args,
)
from melcore.atomic import torch_save, write_json
from melcore.checkpoint_io import half_floats, load_checkpoint
from melcore.errors import UserError, cli_main

# Flags that name this machine's folders: meaningless on a clone, so not shipped.
LOCAL_KEYS = ("data_dir", "log_dir", "resume_checkpoint")


def ship(
    run: str | os.PathLike,
    out: str | os.PathLike,
    command: str,
    data: str,
    curve: str | os.PathLike | None = None,
    step: int | None = None,
    fp16: bool = False,
) -> Path:
    """Copy the EMA weights of one complete checkpoint of `run` into `out` with args and training.json."""
    run, out = Path(run), Path(out)
    args, mel_config = read_args(run)
    rates = parse_rates(args.get("ema_rate", "0.9999"))
    rate = rates[0]
    steps = complete_steps(run, rates)
    if not steps:
        raise UserError(f"--run {run}: no complete checkpoint")
    if step is None:
        step = steps[-1]
    elif step not in steps:
        raise UserError(f"--step {step}: not a complete checkpoint of {run} (have {steps})")
    state = load_checkpoint(run / ema_name(rate, step))
    out.mkdir(parents=True, exist_ok=True)
    torch_save(out / ema_name(rate, step), half_floats(state) if fp16 else state)
    for old in out.glob("ema_*.pt"):  # one checkpoint per shipped folder, removed once the new one is written
        if old.name != ema_name(rate, step):
            old.unlink()
    write_args(out, {k: (None if k in LOCAL_KEYS else v) for k, v in args.items()}, mel_config)
    write_json(out / "training.json", {
        "command": command, "data": data, "steps": step, "seed": args.get("seed", 0),
        "checkpoint": ema_name(rate, step), "dtype": "float16" if fp16 else "float32",
        "train_seconds": train_seconds_at(run, step),
        "curve": json.loads(Path(curve).read_text()) if curve else None,
    })
    return out


@cli_main
def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", required=True, help="the mel_train.py run folder (--log_dir)")
    p.add_argument("--name", default=None, help="folder name under improved_diffusion/weights/")
    p.add_argument("--out", default=None, help="target folder (default: improved_diffusion/weights/<name>)")
    p.add_argument("--command", required=True, help="the training command, recorded in training.json")
    p.add_argument("--data", required=True, help="what it was trained on, recorded in training.json")
    p.add_argument("--curve", default=None, help="quality_curve.py curve.json to record")
    p.add_argument("--step", type=int, default=None, help="ship this step instead of the latest")
    p.add_argument("--fp16", action="store_true", help="store the weights in float16")
    a = p.parse_args(argv)
    if not (a.name or a.out):
        raise UserError("pass --name NAME (under improved_diffusion/weights/) or --out DIR")
    out = ship(a.run, a.out or WEIGHTS_DIR / a.name, a.command, a.data, a.curve, a.step, a.fp16)
    size = sum(f.stat().st_size for f in out.iterdir()) / 2**20
    print(f"shipped {out} ({size:.1f} MB): {ARGS_FILE}, training.json and the EMA weights")


if __name__ == "__main__":
    main()
