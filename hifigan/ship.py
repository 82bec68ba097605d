"""Package a trained vocoder run as shipped weights: hifigan/weights/<name>/.

  python -m hifigan.ship --run runs/vocoder --name notes-vocos-v1 \
      --command "python -m hifigan.train ..." --data "NSynth-GM small, train split" \
      [--results runs/copysyn/results.json] [--step N] [--fp16]

Writes, atomically, the run's g_ checkpoint (latest, or --step; fp16 with --fp16: half the
size, the same audio to within 1e-3), config.json, mel_config.json and training.json (the
command, data, steps, seed, the run's train_summary and the measured copy-synthesis table).
The folder loads with `--vocoder PATH` like any run folder, and offline with
torch.load(weights_only=True).
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from hifigan.inference import WEIGHTS_DIR, read_hifigan_config
from hifigan.utils import save_checkpoint, scan_checkpoint
from melcore.atomic import write_json
from melcore.checkpoint_io import half_floats, load_checkpoint
from melcore.errors import UserError, cli_main
from melcore.mel_config import MelConfig


def _checkpoint(run: Path, step: int | None) -> Path:
    if step is None:
        latest = scan_checkpoint(run, "g_")
        if latest is None:
            raise UserError(f"--run {run}: no g_XXXXXXXX checkpoint")
        return Path(latest)
    path = run / f"g_{step:08d}"
    if not path.is_file():
        raise UserError(f"--step {step}: {path} does not exist")
    return path


def ship(
    run: str | os.PathLike,
    out: str | os.PathLike,
    command: str,
    data: str,
    results: str | os.PathLike | None = None,
    step: int | None = None,
    fp16: bool = False,
) -> Path:
    """Copy one checkpoint of `run` and its configs into `out` with a training.json."""
    run, out = Path(run), Path(out)
    h = read_hifigan_config(run / "config.json")
    mel_config = MelConfig.load(run / "mel_config.json")
    ckpt = _checkpoint(run, step)
    state = load_checkpoint(ckpt)["generator"]
    if fp16:
        state = half_floats(state)
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("g_*"):  # one checkpoint per shipped folder
        old.unlink()
    save_checkpoint(out / ckpt.name, {"generator": state})
    write_json(out / "config.json", dict(h))
    mel_config.save(out / "mel_config.json")
    summary_path = run / "train_summary.json"
    summary = json.loads(summary_path.read_text()) if summary_path.is_file() else {}
    measured = json.loads(Path(results).read_text()) if results else None
    if measured is not None:
        measured.pop("per_note", None)
        for section in measured.get("sets", {}).values():
            section.pop("per_note", None)
    write_json(out / "training.json", {
        "command": command, "data": data, "steps": int(ckpt.name[2:]) + 1, "seed": h.get("seed", 1234),
        "checkpoint": ckpt.name, "dtype": "float16" if fp16 else "float32",
        "validation": summary.get("validation"), "measured": measured,
    })
    return out


@cli_main
def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", required=True, help="the vocoder run folder (hifigan.train --checkpoint_path)")
    p.add_argument("--name", default=None, help="folder name under hifigan/weights/")
    p.add_argument("--out", default=None, help="target folder (default: hifigan/weights/<name>)")
    p.add_argument("--command", required=True, help="the training command, recorded in training.json")
    p.add_argument("--data", required=True, help="what it was trained on, recorded in training.json")
    p.add_argument("--results", default=None, help="copy_synthesis.py results.json to record")
    p.add_argument("--step", type=int, default=None, help="ship g_<step> instead of the latest")
    p.add_argument("--fp16", action="store_true", help="store the weights in float16")
    a = p.parse_args(argv)
    if not (a.name or a.out):
        raise UserError("pass --name NAME (under hifigan/weights/) or --out DIR")
    out = ship(a.run, a.out or WEIGHTS_DIR / a.name, a.command, a.data, a.results, a.step, a.fp16)
    size = sum(f.stat().st_size for f in out.iterdir()) / 2**20
    print(f"shipped {out} ({size:.1f} MB)")


if __name__ == "__main__":
    main()
