"""Vocoder speed: real-time factor of each HiFi-GAN variant the project ships, in one run.

Variants: V1 = the shipped pretrained UNIVERSAL_V1 generator (hifigan.inference.
universal_vocoder, the path scripts/vocode.py takes), V2 and V3 = hifigan/configs/
config_v{2,3}_22k.json with random weights (speed does not depend on the weights).

Modes: `fast` = the project's inference path (HifiganVocoder: weight norm folded,
torch.inference_mode, OMP passive waiting on CPU as entry points set it, melcore.process);
`baseline` = the generator as trained (weight norm kept, torch.no_grad), libgomp's default
spin-waiting. Each variant x mode runs in its own process; processes are timed turn about
so all see the same machine load.

    python benchmarks/bench_vocoder.py --json benchmarks/results/vocoder.json
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import common  # noqa: E402
from melcore.errors import cli_main  # noqa: E402

VARIANTS = ("v1", "v2", "v3")
CONFIGS = Path(__file__).resolve().parents[1] / "hifigan" / "configs"


def build(variant: str, mode: str, device: str):
    """A callable mel [1, 80, T] (numpy) -> audio, and the sampling rate and hop."""
    import json

    import numpy as np
    import torch

    from hifigan.env import AttrDict
    from hifigan.inference import (
        HifiganVocoder,
        mel_config_from_hifigan,
        universal_files,
        universal_vocoder,
    )
    from hifigan.models import Generator
    from melcore.checkpoint_io import load_checkpoint

    if variant == "v1":
        ckpt, cfg = universal_files()
        h = AttrDict(json.loads(cfg.read_text()))
    else:
        ckpt, h = None, AttrDict(json.loads((CONFIGS / f"config_{variant}_22k.json").read_text()))
    if mode == "fast":
        if variant == "v1":
            voc = universal_vocoder(device)
        else:
            torch.manual_seed(0)
            g = Generator(h)
            g.remove_weight_norm()
            voc = HifiganVocoder(g, mel_config_from_hifigan(h), variant, device)
        return voc, h["sampling_rate"], voc.hop_size
    torch.manual_seed(0)
    g = Generator(h)
    if ckpt is not None:
        g.load_state_dict(load_checkpoint(ckpt, "cpu")["generator"])
    g = g.to(device).eval()

    def run(mel: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return g(torch.from_numpy(mel).to(device))[:, 0].cpu().numpy()

    return run, h["sampling_rate"], int(np.prod(h["upsample_rates"]))


def worker(args) -> None:
    import numpy as np

    common.set_threads(args.threads)
    device = args.device
    voc, sr, hop = build(args.variant, args._worker, device)
    frames = max(1, round(args.seconds * sr / hop))
    mel = np.random.default_rng(0).uniform(-8, 1, (1, 80, frames)).astype(np.float32)
    for _ in range(args.warmup):
        voc(mel)

    def run_round():
        out = {}

        def go():
            out["y"] = voc(mel)

        wall, cpu = common.timed(go, device)
        if not np.isfinite(out["y"]).all() or out["y"].shape[-1] != frames * hop:
            raise RuntimeError(f"{args.variant}: bad output {out['y'].shape}")
        return wall, cpu

    common.serve(
        run_round, lambda: {"audio_s": frames * hop / sr, "frames": frames, "sampling_rate": sr}
    )


def parse_args(argv=None):
    ap = common.base_parser(__doc__)
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument(
        "--seconds", type=float, default=0.0, help="audio per call (default: 1 s CPU, 4 s CUDA)"
    )
    ap.add_argument(
        "--rounds", type=int, default=0, help="timed calls per variant and mode (default 3)"
    )
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--variant", default="v1", help=_suppress())
    ap.add_argument("--_worker", default="", help=_suppress())
    args = ap.parse_args(argv)
    args.device = common.pick_device(args.device)
    cuda = args.device.startswith("cuda")
    args.seconds = args.seconds or (0.1 if args.quick else 4.0 if cuda else 1.0)
    args.rounds = args.rounds or (1 if args.quick else 3)
    if args.quick:
        args.warmup = 0
    return args


def interleaved_workers(args, variants: list[str]) -> list:
    """One worker process per variant and mode, each with its mode's environment."""
    from improved_diffusion import fast

    # Each mode's process environment (libgomp reads it when torch loads).
    envs = {
        "baseline": fast.process_env(fast.UPSTREAM),
        "fast": fast.process_env(fast.fastest_mode(args.device)),
    }
    workers = []
    for v in variants:
        for mode in ("baseline", "fast"):
            argv_w = [
                str(Path(__file__).resolve()),
                "--device",
                args.device,
                "--threads",
                str(args.threads),
                "--seconds",
                str(args.seconds),
                "--warmup",
                str(args.warmup),
                "--variant",
                v,
                "--_worker",
                mode,
            ]
            workers.append(common.Worker(f"{v}:{mode}", argv_w, env=envs[mode]))
    return workers


def per_variant(res: dict, variants: list[str]) -> dict:
    """Speed of the fast mode and its ratio to the baseline, per variant."""
    out = {}
    for v in variants:
        fast_, base = res[f"{v}:fast"], res[f"{v}:baseline"]
        audio_s = fast_["audio_s"]
        out[v] = {
            "x_realtime": audio_s / fast_["wall_s"],
            "rtf": fast_["wall_s"] / audio_s,
            "baseline_x_realtime": audio_s / base["wall_s"],
            "ratio": base["wall_s"] / fast_["wall_s"],
            "ratio_cpu_time": base["cpu_s"] / fast_["cpu_s"],
            "x_realtime_per_cpu_s": audio_s / fast_["cpu_s"],
            "audio_s": audio_s,
            "frames": fast_["frames"],
            "sampling_rate": fast_["sampling_rate"],
        }
    return out


@cli_main
def main(argv=None) -> None:
    args = parse_args(argv)
    if args._worker:
        worker(args)
        return
    variants = [v for v in args.variants.split(",") if v]
    bad = [v for v in variants if v not in VARIANTS]
    if bad:
        from melcore.errors import UserError

        raise UserError(f"--variants: unknown {bad}; choose from {list(VARIANTS)}")
    common.set_threads(args.threads)
    res = common.run_interleaved(interleaved_workers(args, variants), args.rounds)
    out = per_variant(res, variants)
    from improved_diffusion import fast

    cuda = args.device.startswith("cuda")
    policy = fast.fastest_mode(args.device).omp_wait_policy  # as configure_process chose
    waiting = f" + OMP_WAIT_POLICY={policy}" if policy else " + libgomp default waiting"
    result = {
        "device": common.describe_device(args.device),
        "quick": args.quick,
        "mode": "weight norm folded + inference_mode" + ("" if cuda else waiting),
        "baseline_mode": "weight norm kept + no_grad"
        + ("" if cuda else " + libgomp default waiting"),
        "note": (
            f"batch 1, {args.seconds:g} s of audio per call, median of {args.rounds} calls after "
            f"{args.warmup} warm-up; x_realtime = audio seconds per wall second; v1 = pretrained "
            "UNIVERSAL_V1, v2/v3 = random weights with the 22.05 kHz configs"
        ),
        "variants": out,
    }
    common.write_result(args.json, result)


def _suppress() -> str:
    import argparse

    return argparse.SUPPRESS


if __name__ == "__main__":
    main()
