"""Training-step speed and peak memory: the project's fastest mode vs upstream's, one run.

The reference configuration: batch 8 of 80 x 64 mel crops, num_channels 64, channel_mult
1,2,3,4, attention at downsample rates 4 and 8, 2 res blocks, scale-shift norm, learned
sigma, cosine schedule, AdamW + EMA. One step = timestep draw, forward, loss
(diffusion.training_losses), backward, AdamW step, EMA update.

The fast mode runs improved_diffusion.train_util.TrainLoop.run_step itself (data already in
memory, speed_mode = fastest_mode(device), TrainLoop's default). The baseline is upstream
improved-diffusion's training step written lean, as its TrainLoop does it for one fp32
microbatch and nothing more: zero the grads, draw uniform timesteps, training_losses,
weighted mean, backward, the grad-norm and loss-dict logging (one .item() per parameter and
per loss quartile, as upstream's log_grad_norm / log_loss_dict), AdamW, then the EMA as
upstream's per-parameter loop (the model itself in fp32, eager, einsum attention, NCHW, from
fast.UPSTREAM). So the ratio is what a user coming from upstream sees.
Each mode runs in its own process (its own peak memory) and the two are timed turn about,
so both see the same machine load; the median step counts.

    python benchmarks/bench_train.py --json benchmarks/results/train.json
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import common  # noqa: E402
from melcore.errors import cli_main  # noqa: E402

REFERENCE = dict(
    num_mels=80,
    crop_width=64,
    num_channels=64,
    channel_mult="1,2,3,4",
    attention_resolutions="16,8",  # image_size 64 // (16, 8) = downsample rates 4 and 8
    num_res_blocks=2,
    use_scale_shift_norm=True,
    learn_sigma=True,
    noise_schedule="cosine",
)
QUICK = dict(
    REFERENCE,
    num_mels=16,
    crop_width=16,
    num_channels=32,
    channel_mult="1,2",
    attention_resolutions="32",
    num_res_blocks=1,
)


def model_flags(quick: bool) -> dict:
    from improved_diffusion.script_util import model_and_diffusion_defaults

    return {**model_and_diffusion_defaults(), **(QUICK if quick else REFERENCE)}


def build_step(mode, flags: dict, batch: int, device: str):
    """A TrainLoop in `mode` (the trainer's own step code); returns step() running one step.

    No checkpoints, samples or validation happen: only TrainLoop.run_step is called.
    """
    import atexit
    import shutil
    import tempfile

    import torch

    from improved_diffusion.logger import Logger
    from improved_diffusion.script_util import create_model_and_diffusion
    from improved_diffusion.train_util import TrainLoop

    torch.manual_seed(0)
    model, diffusion = create_model_and_diffusion(**flags)
    g = torch.Generator().manual_seed(1)
    x = torch.rand(batch, 1, flags["num_mels"], flags["crop_width"], generator=g) * 2 - 1
    log_dir = tempfile.mkdtemp(prefix="bench_train_")  # stays empty: nothing is saved
    atexit.register(shutil.rmtree, log_dir, True)
    loop = TrainLoop(
        model=model,
        diffusion=diffusion,
        data=iter(()),
        batch_size=batch,
        lr=1e-4,
        ema_rate="0.9999",
        precision=mode.precision,
        log_dir=log_dir,
        logger=Logger(None, formats=()),
        progress=False,
        speed_mode=mode,
    )
    if torch.device(device).type != loop.device.type:
        raise RuntimeError(f"TrainLoop runs on {loop.device}, the benchmark asked for {device}")

    def step() -> None:
        loop.run_step(x, {})
        loop.log.dumpkvs(loop.step)  # TrainLoop does this every log_interval steps

    return step


def build_upstream_step(flags: dict, batch: int, device: str):
    """Upstream's full training step, lean (see the module docstring); returns step()."""
    import torch

    from improved_diffusion import fast
    from improved_diffusion.resample import UniformSampler
    from improved_diffusion.script_util import create_model_and_diffusion

    torch.manual_seed(0)
    model, diffusion = create_model_and_diffusion(**flags)
    fast.apply_to_model(model, fast.UPSTREAM)  # fp32, NCHW, einsum attention: upstream's model
    model.to(device).train()
    params = list(model.parameters())
    opt = torch.optim.AdamW(params, lr=1e-4, weight_decay=0.0, foreach=False)
    ema = [p.detach().clone() for p in params]
    sampler = UniformSampler(diffusion)
    g = torch.Generator().manual_seed(1)
    x = (torch.rand(batch, 1, flags["num_mels"], flags["crop_width"], generator=g) * 2 - 1).to(device)

    def step() -> None:
        for p in params:
            if p.grad is not None:
                p.grad.detach_()
                p.grad.zero_()
        t, weights = sampler.sample(batch, device)
        losses = diffusion.training_losses(model, x, t)
        (losses["loss"] * weights).mean().backward()
        grad_sq = 0.0
        for p in params:
            grad_sq += (p.grad**2).sum().item()
        for values in losses.values():
            values.mean().item()
            for sub_t, sub_loss in zip(t.cpu().numpy(), values.detach().cpu().numpy()):
                int(4 * sub_t // diffusion.num_timesteps), float(sub_loss)
        opt.step()
        with torch.no_grad():
            for targ, src in zip(ema, params):
                targ.mul_(0.9999).add_(src, alpha=1 - 0.9999)

    step.params, step.ema = params, ema  # for the test of what one step does
    return step


def worker(args) -> None:
    import torch

    from improved_diffusion import fast

    common.set_threads(args.threads)
    device = args.device
    mode = (
        fast.UPSTREAM
        if args._worker == "upstream"
        else fast.fastest_mode(device, args.precision or None)
    )
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    common.reset_peak_rss()
    rss0 = common.rss_mb()
    if args._worker == "upstream":
        step = build_upstream_step(model_flags(args.quick), args.batch, device)
    else:
        step = build_step(mode, model_flags(args.quick), args.batch, device)
    for _ in range(args.warmup):
        step()

    def run_round():
        def steps():
            for _ in range(args.steps_per_round):
                step()

        wall, cpu = common.timed(steps, device)
        return wall / args.steps_per_round, cpu / args.steps_per_round

    def finish():
        if device.startswith("cuda"):
            peak = torch.cuda.max_memory_allocated() / 2**20
        else:
            peak = common.peak_rss_mb() - rss0
        return {"peak_mb": peak, "mode": mode.describe(), "mode_fields": mode.to_dict()}

    common.serve(run_round, finish)


def measure(args, batch: int) -> dict:
    shared = [
        str(Path(__file__).resolve()),
        "--device",
        args.device,
        "--threads",
        str(args.threads),
        "--batch",
        str(batch),
        "--warmup",
        str(args.warmup),
        "--steps_per_round",
        str(args.steps_per_round),
        "--precision",
        args.precision,
    ] + (["--quick"] if args.quick else [])
    from improved_diffusion import fast

    modes = {
        "upstream": fast.UPSTREAM,
        "fast": fast.fastest_mode(args.device, args.precision or None),
    }
    workers = [
        common.Worker(name, shared + ["--_worker", name], env=fast.process_env(m))
        for name, m in modes.items()
    ]
    res = common.run_interleaved(workers, args.rounds)
    base, fast_ = res["upstream"], res["fast"]
    return {
        "batch": batch,
        "samples_per_s": batch / fast_["wall_s"],
        "peak_mb": fast_["peak_mb"],
        "baseline_samples_per_s": batch / base["wall_s"],
        "baseline_peak_mb": base["peak_mb"],
        "ratio": base["wall_s"] / fast_["wall_s"],
        "peak_mb_ratio": fast_["peak_mb"] / base["peak_mb"],
        "ratio_cpu_time": base["cpu_s"] / fast_["cpu_s"],
        "mode": fast_["mode"],
        "baseline_mode": base["mode"],
        "step_s": fast_["wall_s_all"],
        "baseline_step_s": base["wall_s_all"],
    }


@cli_main
def main(argv=None) -> None:
    ap = common.base_parser(__doc__)
    ap.add_argument(
        "--batches", default="", help="comma list; default 8 on CPU, 8,32 on CUDA (2 with --quick)"
    )
    ap.add_argument(
        "--rounds", type=int, default=0, help="timed rounds per mode (default: 2 CPU, 5 CUDA)"
    )
    ap.add_argument(
        "--steps_per_round", type=int, default=0, help="steps per round (default: 1 CPU, 10 CUDA)"
    )
    ap.add_argument(
        "--warmup", type=int, default=-1, help="untimed steps first (default: 1 CPU, 5 CUDA)"
    )
    ap.add_argument(
        "--precision",
        default="",
        choices=["", "fp32", "bf16", "fp16"],
        help="fast mode's autocast precision (default: the device's fastest)",
    )
    ap.add_argument("--batch", type=int, default=8, help=argparse_suppress())
    ap.add_argument("--_worker", default="", help=argparse_suppress())
    args = ap.parse_args(argv)
    args.device = common.pick_device(args.device)
    cuda = args.device.startswith("cuda")
    if args.rounds <= 0:
        args.rounds = 1 if args.quick else 5 if cuda else 2
    if args.steps_per_round <= 0:
        args.steps_per_round = 10 if cuda and not args.quick else 1
    if args.warmup < 0:
        args.warmup = 0 if args.quick else 5 if cuda else 1
    if args._worker:
        worker(args)
        return
    common.set_threads(args.threads)
    batches = [
        int(b)
        for b in (args.batches or ("2" if args.quick else "8,32" if cuda else "8")).split(",")
    ]
    flags = model_flags(args.quick)
    result: dict = {
        "device": common.describe_device(args.device),
        "quick": args.quick,
        "config": {k: flags[k] for k in REFERENCE},
        "timing": f"median of {args.rounds} interleaved rounds x {args.steps_per_round} steps after {args.warmup} warm-up steps",
        "peak_memory": "CUDA max_memory_allocated"
        if cuda
        else "process peak RSS (VmHWM) above RSS before the model was built",
    }
    for i, batch in enumerate(batches):
        r = measure(args, batch)
        if i == 0:
            result.update(r)
        else:
            result[f"batch{batch}"] = r
    common.write_result(args.json, result)


def argparse_suppress() -> str:
    import argparse

    return argparse.SUPPRESS


if __name__ == "__main__":
    main()
