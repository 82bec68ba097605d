"""A small grid of training runs at a fixed step budget, each evaluated the same way.

Grid file (JSON or YAML):

    {"data_dir": "runs/demo/mels", "max_steps": 200,
     "base": {"num_channels": 32, "num_res_blocks": 1, "crop_width": 32, "batch_size": 8},
     "grid": {"noise_schedule": ["linear", "cosine"], "learn_sigma": [true, false]},
     "classifier": "runs/demo/classifier",      # optional: audio metrics of the samples
     "num_samples": 8, "loss_clips": 16, "bpd_clips": 2}

Every combination of the grid values becomes one run dir `<out>/<name>` trained by the
`evaluation.pipeline.train_from_args` (resuming when it already has checkpoints), then losses per
split, samples and (with a classifier) metrics. The table is written as summary.csv/.md and
experiments.json; a run that fails is recorded with its error instead of stopping the grid.
"""

from __future__ import annotations

import csv
import io
import itertools
import json
import math
import os
import re
import traceback
from pathlib import Path
from typing import Any

from melcore.atomic import write_json, write_text
from melcore.errors import UserError
from melcore.run_lock import RunLock

GRID_KEYS = {"data_dir", "max_steps", "base", "grid", "classifier", "num_samples", "loss_clips", "bpd_clips", "seed"}
COLUMNS = ("name", "status", "step", "train_loss", "valid_loss", "valid_mse", "valid_bpd", "fd", "ndb_k",
           "is_pitch", "pitch_entropy")


def load_grid(path: str | os.PathLike) -> dict:
    """Read and check a grid file; paths in it are relative to the file's folder."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: grid file does not exist")
    text = path.read_text()
    try:
        if path.suffix in (".yaml", ".yml"):
            import yaml

            grid = yaml.safe_load(text)
        else:
            grid = json.loads(text)
    except Exception as exc:  # both parsers' errors
        raise UserError(f"{path}: cannot parse grid ({str(exc).splitlines()[0]})") from None
    if not isinstance(grid, dict):
        raise UserError(f"{path}: the grid must be a mapping with data_dir, max_steps, base, grid")
    unknown = sorted(set(grid) - GRID_KEYS)
    if unknown:
        raise UserError(f"{path}: unknown keys {unknown}; allowed: {sorted(GRID_KEYS)}")
    for key in ("data_dir", "max_steps"):
        if key not in grid:
            raise UserError(f"{path}: missing {key!r}")
    if not isinstance(grid.get("grid", {}), dict) or not all(
        isinstance(v, list) and v for v in grid.get("grid", {}).values()
    ):
        raise UserError(f"{path}: 'grid' must map flag names to non-empty lists of values")
    for key in ("data_dir", "classifier"):
        if grid.get(key) and not Path(grid[key]).is_absolute():
            grid[key] = str(path.parent / grid[key])
    return grid


def expand(grid: dict) -> list[tuple[str, dict]]:
    """Cartesian product of the grid values -> [(run name, flags)], in file order."""
    axes = grid.get("grid", {}) or {}
    keys = list(axes)
    runs = []
    for values in itertools.product(*(axes[k] for k in keys)):
        combo = dict(zip(keys, values))
        name = "-".join(f"{k}={_short(v)}" for k, v in combo.items()) or "base"
        runs.append((re.sub(r"[^A-Za-z0-9_.=,-]", "_", name), combo))
    return runs


def _short(v: Any) -> str:
    return str(v).lower() if isinstance(v, bool) else str(v)


def run_flags(grid: dict, combo: dict, log_dir: Path) -> dict:
    from improved_diffusion.script_util import model_and_diffusion_defaults, training_defaults

    defaults = {**model_and_diffusion_defaults(), **training_defaults()}
    flags = {**grid.get("base", {}), **combo}
    unknown = sorted(set(flags) - set(defaults))
    if unknown:
        raise UserError(f"grid: unknown training flags {unknown}")
    args = {**defaults, "num_workers": 0, "sample_interval": 0, "val_interval": 0, **flags}
    args.update(data_dir=str(grid["data_dir"]), log_dir=str(log_dir), max_steps=int(grid["max_steps"]))
    args["save_interval"] = min(int(args["save_interval"]), int(grid["max_steps"]))
    return args


def evaluate_run(run_dir: Path, grid: dict) -> dict:
    """Losses, samples and (with a classifier) metrics of one finished run."""
    from evaluation.losses import checkpoint_losses, plot_curves
    from evaluation.pipeline import sample_from_checkpoint

    seed = int(grid.get("seed", 0))
    losses = checkpoint_losses(run_dir, grid["data_dir"], splits=("train", "valid"), weights=("ema",),
                               limit=int(grid.get("loss_clips", 16)), bpd_limit=int(grid.get("bpd_clips", 2)),
                               seed=seed)
    write_json(run_dir / "losses.json", losses)
    plot_curves(run_dir, run_dir / "curves.png")
    n = int(grid.get("num_samples", 8))
    sample_from_checkpoint(run_dir, run_dir / "samples", n, batch_size=n, seed=seed, wav=False, progress=False)
    metrics = None
    if grid.get("classifier"):
        from evaluation.metrics import run_audio_metrics

        metrics = run_audio_metrics(grid["data_dir"], str(run_dir / "samples"), grid["classifier"],
                                    str(run_dir / "metrics.json"), seed=seed)
    return {"losses": losses, "metrics": metrics}


def _row(name: str, result: dict) -> dict:
    row = dict.fromkeys(COLUMNS)
    row.update(name=name, status=result["status"])
    ev = result.get("eval") or {}
    losses = ev.get("losses") or {}
    splits = ((losses.get("weights") or {}).get("ema") or {}).get("splits") or {}
    row["step"] = losses.get("step")
    row["train_loss"] = (splits.get("train") or {}).get("loss")
    valid = splits.get("valid") or {}
    row.update(valid_loss=valid.get("loss"), valid_mse=valid.get("mse"), valid_bpd=valid.get("bpd"))
    m = ev.get("metrics") or {}
    for k in ("fd", "ndb_k", "is_pitch", "pitch_entropy"):
        row[k] = m.get(k)
    return row


def summary_tables(rows: list[dict]) -> tuple[str, str]:
    buf = io.StringIO()
    w = csv.DictWriter(buf, COLUMNS)
    w.writeheader()
    w.writerows(rows)

    def fmt(v):
        if isinstance(v, float):
            return f"{v:.4g}"
        return "" if v is None else str(v)

    md = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    md += ["| " + " | ".join(fmt(r[c]) for c in COLUMNS) + " |" for r in rows]
    return buf.getvalue(), "\n".join(md) + "\n"


def what_did_not_work(results: dict[str, dict]) -> list[str]:
    """Plain sentences for the report: failed runs, non-finite losses, configs clearly worse."""
    notes = []
    rows = {name: _row(name, r) for name, r in results.items()}
    for name, r in results.items():
        if r["status"] != "ok":
            notes.append(f"{name}: failed ({r.get('error', 'unknown error')})")
    finite = {n: r["valid_loss"] for n, r in rows.items()
              if isinstance(r["valid_loss"], float) and math.isfinite(r["valid_loss"])}
    for n, r in rows.items():
        v = r["valid_loss"]
        if r["status"] == "ok" and (v is None or not math.isfinite(v)):
            notes.append(f"{n}: validation loss is not finite")
    if len(finite) >= 2:
        best = min(finite, key=finite.get)
        for n, v in finite.items():
            if n != best and v > 1.25 * finite[best]:
                notes.append(f"{n}: validation loss {v:.4g} is {v / finite[best]:.2f}x the best ({best}, {finite[best]:.4g})")
    for n, r in results.items():
        m = ((r.get("eval") or {}).get("metrics")) or {}
        floor = m.get("floor") or {}
        if m.get("fd") is not None and floor.get("fd") and m["fd"] > 3 * floor["fd"]:
            notes.append(f"{n}: FD {m['fd']:.3g} is more than 3x the real-vs-real floor {floor['fd']:.3g}")
    return notes


def run_grid(grid: dict, out_dir: str | os.PathLike, progress: bool = False) -> dict:
    """Train and evaluate every combination; writes summary.csv, summary.md, experiments.json."""
    with RunLock(out_dir, "experiments", flag="--out"):  # one grid per folder
        return _run_grid(grid, Path(out_dir), progress)


def _run_grid(grid: dict, out: Path, progress: bool) -> dict:
    from evaluation.pipeline import train_from_args

    results: dict[str, dict] = {}
    for name, combo in expand(grid):
        run_dir = out / name
        args = run_flags(grid, combo, run_dir)
        result: dict = {"flags": combo, "run_dir": name}
        try:
            train_from_args(args, progress=progress)
            result["eval"] = evaluate_run(run_dir, grid)
            result["status"] = "ok"
        except Exception as exc:  # one diverging or invalid config must not stop the grid
            result.update(status="failed", error=f"{type(exc).__name__}: {exc}")
            write_text(run_dir / "error.txt", traceback.format_exc())
        results[name] = result
    rows = [_row(n, r) for n, r in results.items()]
    csv_text, md_text = summary_tables(rows)
    write_text(out / "summary.csv", csv_text)
    write_text(out / "summary.md", md_text)
    summary = {"grid": grid, "runs": results, "rows": rows, "did_not_work": what_did_not_work(results)}
    write_json(out / "experiments.json", summary)
    return summary
