#!/usr/bin/env python
"""Variations, inpainting and continuation of a real mel with a trained model.

  python scripts/variations.py vary --model_path RUN --mel X.npy --strength 0.5 --n 4 --out_dir D
  python scripts/variations.py inpaint --model_path RUN --mel X.npy --start 16 --stop 48 --out_dir D
  python scripts/variations.py continue --model_path RUN --mel X.npy --keep 32 --out_dir D
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from melcore.process import configure_process  # noqa: E402

configure_process()  # before torch loads: libgomp reads OMP_WAIT_POLICY only then

from evaluation import cli  # noqa: E402
from evaluation.generation import (  # noqa: E402
    continuation,
    frame_mask,
    inpaint,
    load_mel_input,
    mel_grid_png,
    variations,
    write_outputs,
)
from melcore.errors import cli_main  # noqa: E402


@cli_main
def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="mode", required=True)
    for mode in ("vary", "inpaint", "continue"):
        s = sub.add_parser(mode)
        cli.add_model_flags(s, "100")
        s.add_argument("--mel", required=True, help="log-mel .npy [num_mels, frames]")
        s.add_argument("--n", type=int, default=4, help="outputs to draw")
        s.add_argument("--out_dir", required=True)
        cli.add_vocoder_flags(s)
        if mode == "vary":
            s.add_argument("--strength", type=float, default=0.5, help="noise level, 0..1 of the chain")
        elif mode == "inpaint":
            s.add_argument("--start", type=int, required=True, help="first generated frame")
            s.add_argument("--stop", type=int, required=True, help="frame after the last generated one")
        else:
            s.add_argument("--keep", type=int, required=True, help="known frames at the start")
    a = p.parse_args(argv)
    loaded = cli.load(a)
    cfg, width = loaded.mel_config, int(loaded.args["crop_width"])
    x = load_mel_input(a.mel, cfg, width).to(a.device)
    m, d = loaded.model, loaded.diffusion
    if a.mode == "vary":
        out = variations(m, d, x, a.strength, a.n, a.seed, progress=True)
    elif a.mode == "inpaint":
        keep = 1 - frame_mask(tuple(x.shape), a.start, a.stop)
        out = inpaint(m, d, x, keep.to(x), a.n, a.seed, progress=True)
    else:
        out = continuation(m, d, x, a.keep, a.n, a.seed, progress=True)
    names = [f"{a.mode}_{k:02d}" for k in range(a.n)]
    write_outputs(out, names, a.out_dir, cfg, cli.vocoder(a, cfg))
    row = [cfg.denormalize(v[0].cpu().numpy()) for v in [x[0], *out]]
    mel_grid_png([row], Path(a.out_dir) / "grid.png", ["input", *names], config=cfg)
    print(f"wrote {a.n} {a.mode} outputs and grid.png to {a.out_dir}")


if __name__ == "__main__":
    main()
