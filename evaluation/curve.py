"""Quality against training time: every saved EMA checkpoint of one run, sampled and measured
the same way against the real-vs-real floor (scripts/quality_curve.py).

A point per checkpoint: the training wall time it took (from its opt file), CPU minutes
(wall x threads), the note check's pass count, FD and the median position between the floor
(0) and noise (1). Each checkpoint's samples and metrics stay in `out/step_XXXXXX/`, so a rerun
only measures checkpoints it has not measured yet.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from improved_diffusion.checkpoint import (
    complete_steps,
    ema_name,
    parse_rates,
    read_args,
    train_seconds_at,
)
from improved_diffusion.samplers import DEFAULT_SAMPLER
from melcore.atomic import save_figure, write_json
from melcore.errors import UserError


def measure_point(
    run_dir: Path, step: int, rate: float, real_dir: str, classifier_dir: str, out: Path,
    num_samples: int, sampler: str, sampler_steps: int, seed: int, threads: int, progress: bool,
) -> dict:
    """Sample `num_samples` whole notes from one EMA checkpoint, measure them; one curve point."""
    from evaluation.findings import verdict
    from evaluation.metrics import run_audio_metrics
    from evaluation.pipeline import sample_from_checkpoint

    samples = out / "samples"
    metrics_path = out / "metrics.json"
    if metrics_path.is_file():
        metrics = json.loads(metrics_path.read_text())
    else:
        sample_from_checkpoint(run_dir / ema_name(rate, step), samples, num_samples, batch_size=min(num_samples, 16),
                               seed=seed, wav=False, progress=progress, sampler=sampler, steps=sampler_steps)
        metrics = run_audio_metrics(real_dir, str(samples), classifier_dir, str(metrics_path), seed=seed)
    seconds = train_seconds_at(run_dir, step)
    note_check = metrics.get("note_check") or {}
    return {
        "step": step,
        "train_minutes": None if seconds is None else round(seconds / 60, 2),
        "cpu_minutes": None if seconds is None else round(seconds * threads / 60, 2),
        "notes": note_check.get("notes"),
        "n": note_check.get("n"),
        "fd": metrics.get("fd"),
        "position": verdict(metrics)["median_position"],
    }


def quality_curve(
    run_dir: str | os.PathLike,
    real_dir: str,
    classifier_dir: str,
    out_dir: str | os.PathLike,
    num_samples: int = 64,
    sampler: str = DEFAULT_SAMPLER,
    sampler_steps: int = 20,
    seed: int = 0,
    threads: int = 1,
    every: int = 1,
    progress: bool = True,
) -> dict:
    """Measure every `every`-th complete checkpoint of `run_dir` (and always the last); writes
    out_dir/curve.json and curve.png and returns the curve."""
    run_dir, out = Path(run_dir), Path(out_dir)
    if every <= 0:
        raise UserError(f"--every {every}: must be positive")
    args, _ = read_args(run_dir)
    rates = parse_rates(args.get("ema_rate", "0.9999"))
    steps = complete_steps(run_dir, rates)
    if not steps:
        raise UserError(f"{run_dir}: no complete checkpoint to measure")
    chosen = sorted(set(steps[every - 1::every]) | {steps[-1]})
    points = []
    for step in chosen:
        point_dir = out / f"step_{step:06d}"
        points.append(measure_point(run_dir, step, rates[0], real_dir, classifier_dir, point_dir,
                                    num_samples, sampler, sampler_steps, seed, threads, progress))
        curve = {"run": str(run_dir), "real": real_dir, "threads": threads, "num_samples": num_samples,
                 "sampler": f"{sampler}-{sampler_steps}", "seed": seed, "points": points}
        write_json(out / "curve.json", curve)  # after every point: an interrupted run keeps what it measured
    plot_curve(points, out / "curve.png", title=run_dir.name)
    return curve


def plot_curve(points: list[dict], out_png: str | os.PathLike, title: str = "") -> Path | None:
    """Note share and median position against CPU minutes; None when no point has a time."""
    pts = [p for p in points if p.get("cpu_minutes") is not None]
    if not pts:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    minutes = [p["cpu_minutes"] for p in pts]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    share = [p["notes"] / p["n"] if p.get("n") else float("nan") for p in pts]
    ax.plot(minutes, share, "o-", label="note share (passing the note check)")
    pos = [p["position"] if p.get("position") is not None else float("nan") for p in pts]
    ax.plot(minutes, pos, "s--", label="median position (0 = real-vs-real floor, 1 = noise)")
    ax.set_xlabel("CPU minutes of training")
    ax.set_ylim(0, 1.05)
    ax.legend(fontsize=7)
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return save_figure(fig, out_png, dpi=100)
