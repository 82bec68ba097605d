#!/usr/bin/env python
"""Interpolate between two mels: DDIM-invert both, slerp the latents, DDIM-decode, vocode.

  python scripts/interpolate.py --model_path runs/demo/run --data_dir runs/demo/mels --pick_endpoints \
      --steps 5 --out_dir runs/demo/interp
--pick_endpoints takes two test clips of different instrument families whose pitches are at least
7 semitones apart (evaluation.generation.pick_endpoints); --a A.npy --b B.npy names them instead.
Writes interp_{k:02d}.npy (+ .wav), grid.png and interpolation.json into --out_dir.
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
    interpolate,
    load_mel_input,
    mel_grid_png,
    pick_endpoints,
    write_outputs,
)
from improved_diffusion.script_util import default_respacing  # noqa: E402
from melcore.atomic import write_json  # noqa: E402
from melcore.errors import cli_main  # noqa: E402


@cli_main
def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    cli.add_model_flags(p, default_respacing(1000))
    p.add_argument("--a", default=None, help="log-mel .npy [num_mels, frames] (first crop_width frames used)")
    p.add_argument("--b", default=None)
    p.add_argument("--pick_endpoints", action="store_true",
                   help="pick --a/--b from --data_dir: different instrument families, pitches 7+ semitones apart")
    p.add_argument("--data_dir", default=None, help="mel set for --pick_endpoints")
    p.add_argument("--split", default="test", help="split --pick_endpoints draws from")
    p.add_argument("--steps", type=int, default=5, help="points along the path, ends included")
    p.add_argument("--out_dir", required=True)
    cli.add_vocoder_flags(p)
    a = p.parse_args(argv)
    if a.pick_endpoints:
        if a.data_dir is None or a.a or a.b:
            p.error("--pick_endpoints needs --data_dir and excludes --a/--b")
        a.a, a.b = (str(x) for x in pick_endpoints(a.data_dir, a.split))
    elif not (a.a and a.b):
        p.error("give --a and --b, or --pick_endpoints with --data_dir")
    loaded = cli.load(a)
    cfg, width = loaded.mel_config, int(loaded.args["crop_width"])
    xa, xb = (load_mel_input(f, cfg, width).to(a.device) for f in (a.a, a.b))
    mels, alphas = interpolate(loaded.model, loaded.diffusion, xa, xb, a.steps, progress=True)
    names = [f"interp_{k:02d}" for k in range(a.steps)]
    write_outputs(mels, names, a.out_dir, cfg, cli.vocoder(a, cfg))
    row = [cfg.denormalize(m[0].cpu().numpy()) for m in [xa[0], *mels, xb[0]]]
    titles = ["a", *(f"{float(al):.2f}" for al in alphas), "b"]
    mel_grid_png([row], Path(a.out_dir) / "grid.png", titles, config=cfg)
    err = [float((mels[0] - xa[0]).abs().mean()), float((mels[-1] - xb[0]).abs().mean())]
    write_json(Path(a.out_dir) / "interpolation.json", {
        "a": a.a, "b": a.b, "endpoints": {"a": Path(a.a).stem, "b": Path(a.b).stem}, "alphas": [float(x) for x in alphas], "files": names,
        "timestep_respacing": a.timestep_respacing, "checkpoint": str(loaded.path),
        "endpoint_mae": err,
    })
    print(f"endpoint reconstruction MAE (normalised): a {err[0]:.4f}, b {err[1]:.4f}")
    print(f"wrote {a.steps} mels and grid.png to {a.out_dir}")


if __name__ == "__main__":
    main()
