"""Diffusion losses per split (raw and EMA weights), bits/dim, timestep-quartile breakdown,
and training curves from progress.csv.

Losses use the training diffusion (no respacing): `training_losses` at seeded uniform
timesteps gives mse / vb / loss per example, grouped by timestep quartile q = 4t // T;
`calc_bpd_loop` gives the full variational bound in bits/dim and, summed per quartile, which
part of the chain the bits come from. bits/dim is the discretised-Gaussian bound of the
normalised [-1, 1] mel at 8-bit bins (upstream's image convention), so it compares models on
one mel config, not across configs.
"""

from __future__ import annotations

import csv
import math
import os
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from evaluation.mels import fixed_crops, load_melset, normalized
from hifigan.errors import UserError
from hifigan.mel_config import require_match

SPLITS = ("train", "valid", "test")
WEIGHTS = ("raw", "ema")


def split_crops(data_dir: str | os.PathLike, split: str, width: int, limit: int | None = None, seed: int = 0):
    """Seeded crops of one split as the model sees them: float [N, 1, num_mels, width] in [-1, 1]."""
    coll = load_melset(data_dir, split)
    if limit is not None and len(coll) > limit:
        idx = np.sort(np.random.default_rng(seed).choice(len(coll), size=limit, replace=False))
        coll.mels = [coll.mels[i] for i in idx]
    if not len(coll):
        return None, coll.config
    x = normalized(fixed_crops(coll.mels, width, seed), coll.config)
    return torch.from_numpy(x[:, None]), coll.config


def _quartiles(values: torch.Tensor, t: torch.Tensor, num_timesteps: int) -> list[float | None]:
    q = (4 * t // num_timesteps).clamp(max=3)
    return [float(values[q == i].mean()) if (q == i).any() else None for i in range(4)]


@torch.no_grad()
def diffusion_losses(
    model: torch.nn.Module,
    diffusion,
    x: torch.Tensor,
    batch_size: int = 16,
    seed: int = 0,
    repeats: int = 1,
    bpd_limit: int | None = 8,
    progress: bool = False,
) -> dict:
    """Mean losses of `x` ([N, C, H, W]) and their timestep-quartile breakdown.

    `repeats` draws that many timesteps per example; `bpd_limit` examples go through the full
    bound (T model calls each; 0 skips it).
    """
    model.eval()
    device = next(model.parameters()).device
    T = diffusion.num_timesteps
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    terms: dict[str, list[torch.Tensor]] = {}
    ts = []
    for _ in range(repeats):
        for i in range(0, len(x), batch_size):
            xb = x[i : i + batch_size].to(device)
            t = torch.randint(0, T, (len(xb),), generator=gen)
            out = diffusion.training_losses(model, xb, t.to(device))
            for k, v in out.items():
                terms.setdefault(k, []).append(v.float().cpu())
            ts.append(t)
    t_all = torch.cat(ts)
    result: dict = {"n": len(x), "num_timesteps": T, "quartiles": {}}
    for k, parts in terms.items():
        v = torch.cat(parts)
        result[k] = float(v.mean())
        result["quartiles"][k] = _quartiles(v, t_all, T)
    n_bpd = len(x) if bpd_limit is None else min(bpd_limit, len(x))
    if n_bpd > 0:
        bpd, prior, vb_terms = [], [], []
        for i in tqdm(range(0, n_bpd, batch_size), desc="bpd", leave=False, disable=not progress):
            xb = x[i : min(i + batch_size, n_bpd)].to(device)
            out = diffusion.calc_bpd_loop(model, xb, clip_denoised=True)
            bpd.append(out["total_bpd"].cpu())
            prior.append(out["prior_bpd"].cpu())
            vb_terms.append(out["vb"].cpu())
        vb = torch.cat(vb_terms).flip(1)  # column j held timestep T-1-j; now column = t
        q = (4 * torch.arange(T) // T).clamp(max=3)
        result["bpd"] = float(torch.cat(bpd).mean())
        result["prior_bpd"] = float(torch.cat(prior).mean())
        result["bpd_n"] = n_bpd
        result["quartiles"]["bpd"] = [float(vb[:, q == i].sum(1).mean()) for i in range(4)]
    return result


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
) -> dict:
    """Losses of a checkpoint (file or run dir) on each split of a prepared set, raw and EMA."""
    from improved_diffusion.checkpoint import load_model

    result: dict = {"data_dir": str(data_dir), "weights": {}}
    for w in weights:
        loaded = load_model(checkpoint, overrides={"timestep_respacing": ""}, use_ema=(w == "ema"), device=device)
        width = int(loaded.args.get("crop_width", 64))
        result.update(checkpoint=str(loaded.path.parent), step=loaded.step, crop_width=width)
        per_split = {}
        for split in splits:
            x, config = split_crops(data_dir, split, width, limit, seed)
            require_match(loaded.mel_config, config, f"{checkpoint} (args.json)", f"{data_dir}")
            if x is None:
                per_split[split] = None
                continue
            per_split[split] = diffusion_losses(
                loaded.model, loaded.diffusion, x, batch_size, seed, bpd_limit=bpd_limit
            )
        result["weights"][w] = {"file": loaded.path.name, "splits": per_split}
    return result


def zero_shot(
    checkpoint: str | os.PathLike,
    own_data: str | os.PathLike,
    other_data: str | os.PathLike,
    split: str = "test",
    **kwargs,
) -> dict:
    """A model trained on `own_data` evaluated on `other_data`: the same losses side by side."""
    own = checkpoint_losses(checkpoint, own_data, splits=(split,), weights=("ema",), **kwargs)
    other = checkpoint_losses(checkpoint, other_data, splits=(split,), weights=("ema",), **kwargs)
    return {
        "split": split,
        "own": {"data_dir": str(own_data), **(own["weights"]["ema"]["splits"][split] or {})},
        "other": {"data_dir": str(other_data), **(other["weights"]["ema"]["splits"][split] or {})},
    }


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
    out = Path(out_png)
    out.parent.mkdir(parents=True, exist_ok=True)
    from hifigan.atomic import atomic_open

    with atomic_open(out, "wb") as f:
        fig.savefig(f, format="png", dpi=100)
    plt.close(fig)
    return out


def require_run_dir(path: str | os.PathLike) -> Path:
    path = Path(path)
    if not path.exists():
        raise UserError(f"{path}: run dir does not exist")
    if not (path / "args.json").is_file() and not (path.is_file() and (path.parent / "args.json").is_file()):
        raise UserError(f"{path}: no args.json beside it; point at a run dir written by mel_train.py")
    return path
