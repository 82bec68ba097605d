"""Sampling speed: DDIM-50 generation of 4 s notes as a real-time factor, and its speed-up
over upstream's 1000-step ancestral sampling of the same model, in one run.

The model is the reference UNet of bench_train.py with random weights (speed does not
depend on the weights). A 4 s note is 80 x 256 frames (16 kHz, hop 256: 4.1 s of audio).
Both chains run the same model in the project's fastest mode (improved_diffusion.fast, the
mode sampling uses), so the ratio is the sampler's: 50 DDIM steps vs 1000 ancestral steps.
Every chain step costs the same, so each chain is timed over its first `--timed_steps`
steps after a warm-up step and extrapolated to the whole chain (50 DDIM / 1000 ancestral);
the JSON says how many steps were timed. On CPU the default is reduced to batches 1 and 4
of 80 x 64 frames (1 s notes), also stated in the JSON; on CUDA batches 1 and 32 of
80 x 256 frames with the whole DDIM chain timed.

    python benchmarks/bench_sample.py --json benchmarks/results/sample.json
"""

from __future__ import annotations

import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import common  # noqa: E402
from benchmarks.bench_train import model_flags  # noqa: E402
from melcore.errors import cli_main  # noqa: E402

ANCESTRAL_STEPS = 1000


def build(flags: dict, device: str):
    """The reference UNet in sampling mode, its DDIM-50 and full 1000-step diffusions, the mode."""
    import torch

    from improved_diffusion import fast
    from improved_diffusion.script_util import (
        DDIM_STEPS,
        create_model_and_diffusion,
        diffusion_from_args,
    )

    torch.manual_seed(0)
    model, ddim = create_model_and_diffusion(**{**flags, "timestep_respacing": f"ddim{DDIM_STEPS}"})
    full = diffusion_from_args(flags, timestep_respacing="")
    model.to(device).eval()
    mode = fast.prepare_for_sampling(model, device)  # what sample_mels does
    return model, ddim, full, mode


def chain_seconds_per_step(
    model, diffusion, mode, shape, batch: int, steps: int, ddim: bool, device: str
) -> float:
    """Wall seconds per chain step, over `steps` steps after one warm-up step."""
    import torch

    from improved_diffusion import fast

    noise = fast.prepare_input(
        torch.randn(batch, *shape, generator=torch.Generator().manual_seed(0)).to(device), mode
    )
    loop = diffusion.ddim_sample_loop_progressive if ddim else diffusion.p_sample_loop_progressive
    with fast.inference(mode, device):
        chain = loop(model, (batch, *shape), noise=noise, device=device)
        next(chain)  # warm-up step
        holder = {}

        def run():
            for _ in range(steps):
                holder["x"] = next(chain)["sample"]

        wall, _ = common.timed(run, device)
        chain.close()
    if not torch.isfinite(holder["x"]).all():
        raise RuntimeError("sampling produced non-finite values")
    return wall / steps


def parse_args(argv=None):
    ap = common.base_parser(__doc__)
    ap.add_argument("--batches", default="", help="comma list (default: 1,32 on CUDA, 1,4 on CPU)")
    ap.add_argument(
        "--frames", type=int, default=0, help="mel frames per note (default: 256 CUDA, 64 CPU)"
    )
    ap.add_argument(
        "--timed_steps", type=int, default=0, help="DDIM steps timed (default: all 50 CUDA, 3 CPU)"
    )
    ap.add_argument(
        "--ancestral_steps",
        type=int,
        default=0,
        help="ancestral steps timed (default: 5 CUDA, 2 CPU)",
    )
    ap.add_argument(
        "--rounds", type=int, default=0, help="repeats, median kept (default: 3 CUDA, 1 CPU)"
    )
    return ap.parse_args(argv)


def settings(args, flags: dict, cuda: bool) -> dict:
    """Frames, batches, timed steps and rounds: the flags, else the device's defaults."""
    from improved_diffusion.script_util import DDIM_STEPS

    frames = args.frames or (flags["crop_width"] if args.quick else 256 if cuda else 64)
    batches = [
        int(b)
        for b in (args.batches or ("1,2" if args.quick else "1,32" if cuda else "1,4")).split(",")
    ]
    return {
        "frames": frames,
        "batches": batches,
        "timed_steps": args.timed_steps or (2 if args.quick else DDIM_STEPS if cuda else 3),
        "anc_steps": args.ancestral_steps or (1 if args.quick else 5 if cuda else 2),
        "rounds": args.rounds or (3 if cuda and not args.quick else 1),
        "reduced": not args.quick and not cuda and (frames != 256 or 32 not in batches),
    }


def time_batch(built, shape, batch: int, s: dict, audio_s: float, device: str) -> dict:
    """DDIM and ancestral chain speed at one batch size, extrapolated to whole chains."""
    from improved_diffusion.script_util import DDIM_STEPS

    model, ddim_diff, anc_diff, fast_mode = built
    ddim_t, anc_t = [], []
    for _ in range(s["rounds"]):  # turn about, so both chains see the same machine load
        ddim_t.append(
            chain_seconds_per_step(
                model, ddim_diff, fast_mode, shape, batch, s["timed_steps"], True, device
            )
        )
        anc_t.append(
            chain_seconds_per_step(
                model, anc_diff, fast_mode, shape, batch, s["anc_steps"], False, device
            )
        )
    ddim_step, anc_step = statistics.median(ddim_t), statistics.median(anc_t)
    ddim_total, anc_total = ddim_step * DDIM_STEPS, anc_step * ANCESTRAL_STEPS
    return {
        "batch": batch,
        "ddim50_seconds": ddim_total,
        "ddim50_x_realtime": audio_s / ddim_total,
        "ddim50_rtf": ddim_total / audio_s,
        "ancestral1000_seconds": anc_total,
        "ancestral1000_x_realtime": audio_s / anc_total,
        "ratio_vs_ancestral1000": anc_total / ddim_total,
        "ddim_step_s": ddim_step,
        "ancestral_step_s": anc_step,
    }


@cli_main
def main(argv=None) -> None:
    args = parse_args(argv)
    device = common.pick_device(args.device)
    cuda = device.startswith("cuda")
    common.set_threads(args.threads)

    from melcore.mel_config import MelConfig

    flags = model_flags(args.quick)
    s = settings(args, flags, cuda)
    frames, batches, timed_steps = s["frames"], s["batches"], s["timed_steps"]
    anc_steps, rounds, reduced = s["anc_steps"], s["rounds"], s["reduced"]
    mel = MelConfig.from_preset("16k")
    shape = (1, flags["num_mels"], frames)
    audio_s_per_note = frames * mel.hop_size / mel.sampling_rate
    built = build(flags, device)
    per_batch = {b: time_batch(built, shape, b, s, b * audio_s_per_note, device) for b in batches}
    fast_mode = built[3]
    first = per_batch[batches[0]]
    result = {
        "device": common.describe_device(device),
        "quick": args.quick,
        "mode": fast_mode.describe(training=False) + " + inference_mode",
        "baseline_mode": "1000-step ancestral sampling (p_sample_loop), same model and mode",
        "frames": frames,
        "num_mels": flags["num_mels"],
        "audio_s_per_note": audio_s_per_note,
        "reduced": reduced,
        "note": (
            f"{'REDUCED for CPU: ' if reduced else ''}{frames} frames per note "
            f"({audio_s_per_note:.2f} s at 16 kHz, hop 256), batches {batches}; "
            f"DDIM-50 extrapolated from {timed_steps} timed steps, 1000-step ancestral from "
            f"{anc_steps} timed steps (median of {rounds} rounds); x_realtime = audio seconds "
            "generated per wall second, rtf = wall / audio"
        ),
        "x_realtime": first["ddim50_x_realtime"],
        "ratio": first["ratio_vs_ancestral1000"],
        "batches": {str(b): r for b, r in per_batch.items()},
    }
    common.write_result(args.json, result)


if __name__ == "__main__":
    main()
