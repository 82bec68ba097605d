"""Diffusion losses per split (raw and EMA weights), bits/dim, timestep-quartile breakdown,
and training curves from progress.csv.

The numbers come from the training code's `improved_diffusion.evaluate.split_losses` (the
same function that logs validation loss during training), run on the unrespaced diffusion:
loss / mse / vb and their quartiles `<key>_q0..3` (q = 4t // T), and bits/dim from the full
variational bound (the discretised-Gaussian bound at 8-bit bins of the normalised mel, so it
compares models on one mel config, not across configs).
"""

from __future__ import annotations

import csv
import math
import os
from pathlib import Path

import numpy as np

from melcore.errors import UserError
from melcore.mel_config import require_match

SPLITS = ("train", "valid", "test")
WEIGHTS = ("raw", "ema")


def checkpoint_losses(
    checkpoint: str | os.PathLike,
    data_dir: str | os.PathLike,
    splits: tuple[str, ...] = SPLITS,
    weights: tuple[str, ...] = WEIGHTS,
    limit: int | None = 64,
    bpd_limit: int | None = 8,
    batch_size: int = 16,
    seed: int = 0,
    device: str = "cpu",
    trust: bool = False,
) -> dict:
    """Losses of a checkpoint (file or run dir) on each split of a prepared set, raw and EMA.
    `trust`: --trust-checkpoint."""
    from improved_diffusion.checkpoint import load_model
    from improved_diffusion.evaluate import split_losses
    from melcore.melset import MelSet

    result: dict = {"data_dir": str(data_dir), "weights": {}}
    for w in weights:
        # bits/dim needs the whole chain: always the trained (unrespaced) diffusion
        loaded = load_model(checkpoint, overrides={"timestep_respacing": ""}, use_ema=(w == "ema"), device=device,
                            trust=trust)
        width = int(loaded.args["crop_width"])
        result.update(checkpoint=str(loaded.path.parent), step=loaded.step, crop_width=width,
                      diffusion_steps=loaded.diffusion.num_timesteps)
        per_split = {}
        for split in splits:
            melset = MelSet(data_dir, split)
            require_match(loaded.mel_config, melset.config, f"{checkpoint} (args.json)", f"{data_dir}")
            if not len(melset):
                per_split[split] = None
                continue
            per_split[split] = split_losses(
                loaded.model, loaded.diffusion, melset, width, num_samples=limit, batch_size=batch_size,
                seed=seed, bpd=bool(bpd_limit), bpd_samples=bpd_limit,
            )
        result["weights"][w] = {"file": loaded.path.name, "splits": per_split}
    return result


def zero_shot(
    checkpoint: str | os.PathLike,
    own_data: str | os.PathLike,
    other_data: str | os.PathLike,
    split: str = "test",
    samples: str | os.PathLike | None = None,
    classifier: str | os.PathLike | None = None,
    own_split: str | None = None,
    own_metrics: dict | None = None,
    **kwargs,
) -> dict:
    """A model trained on `own_data` evaluated on `other_data`, side by side with its own set:
    EMA losses and bits/dim on `split` (on `own_split` of the own set when given: the held-out
    split of one set next to its train split), and (given its samples and a classifier) the audio
    metrics of the same samples against each set's real clips (`own_metrics`: already computed
    against the own set, not recomputed)."""
    out: dict = {"split": split}
    for side, data, sp in (("own", own_data, own_split or split), ("other", other_data, split)):
        res = checkpoint_losses(checkpoint, data, splits=(sp,), weights=("ema",), **kwargs)
        out[side] = {"data_dir": str(data), "split": sp, **(res["weights"]["ema"]["splits"][sp] or {})}
        if samples is not None and classifier is not None:
            from evaluation.metrics import run_audio_metrics

            reuse = side == "own" and own_metrics is not None
            out[side]["metrics"] = own_metrics if reuse else run_audio_metrics(str(data), str(samples), str(classifier))
    return out


# -- training curves ----------------------------------------------------------------------------
def read_progress(run_dir: str | os.PathLike) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """progress.csv -> {column: (steps, values)} keeping only rows where the column has a number."""
    path = Path(run_dir) / "progress.csv"
    if not path.is_file():
        return {}
    with open(path) as f:
        rows = list(csv.DictReader(f))
    series: dict[str, tuple[list, list]] = {}
    for i, row in enumerate(rows):
        try:
            step = float(row.get("step") or i)
        except ValueError:
            step = float(i)
        for k, v in row.items():
            if k == "step" or k is None:
                continue
            try:
                val = float(v)
            except (TypeError, ValueError):
                continue
            if math.isfinite(val):
                series.setdefault(k, ([], []))
                series[k][0].append(step)
                series[k][1].append(val)
    return {k: (np.array(s), np.array(v)) for k, (s, v) in series.items()}


def plot_curves(run_dir: str | os.PathLike, out_png: str | os.PathLike) -> Path | None:
    """Training loss (+ mse/vb) and periodic validation loss against step; None without data."""
    series = read_progress(run_dir)
    train_keys = [k for k in ("loss", "mse", "vb") if k in series]
    val_keys = [k for k in series if k.startswith("val_") and not k[-3:-1] == "_q"]
    if not train_keys and not val_keys:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    for k in train_keys:
        ax.plot(*series[k], label=f"train {k}", lw=1)
    for k in val_keys:
        ax.plot(*series[k], "o-", label=k.replace("_", " "), ms=3)
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    if all((series[k][1] > 0).all() for k in train_keys + val_keys):
        ax.set_yscale("log")
    ax.legend(fontsize=7)
    ax.set_title(Path(run_dir).name, fontsize=9)
    fig.tight_layout()
    from melcore.atomic import save_figure

    return save_figure(fig, out_png, dpi=100)


def require_run_dir(path: str | os.PathLike) -> Path:
    path = Path(path)
    if not path.exists():
        raise UserError(f"{path}: run dir does not exist")
    if not (path / "args.json").is_file() and not (path.is_file() and (path.parent / "args.json").is_file()):
        raise UserError(f"{path}: no args.json beside it; point at a run dir written by mel_train.py")
    return path
