"""The one checkpoint writer/reader: upstream file names, args.json beside them, latest lookup.

A run dir holds, per saved step s: model{s:06d}.pt, ema_{rate}_{s:06d}.pt for each EMA rate,
opt{s:06d}.pt (optimizer, grad scaler, step) and one args.json (all flags + "mel_config").
Every file is written atomically and the model file last, so a step counts as complete
only when all its files exist; a run killed at any moment resumes from the latest complete one.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from melcore.atomic import torch_save, write_json
from melcore.errors import UserError
from melcore.mel_config import MelConfig

ARGS_FILE = "args.json"
# Diffusion models trained here ship as package data, one folder per model: an EMA file, its
# args.json and a training.json (improved_diffusion/ship.py). `--model_path NAME` finds them.
WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
# Flags that choose how to sample rather than what was trained: may differ from args.json.
# crop_width is the sampled width: the UNet is convolutional in time, so a model trained on
# 64-frame crops can generate whole notes (any multiple of its downsampling factor).
SAMPLING_KEYS = ("timestep_respacing", "attention_impl", "use_checkpoint", "use_fp16", "crop_width")

_STEP_RE = re.compile(r"^(?:model|opt|ema_[0-9.e-]+_)(\d{6,})\.pt$")


def parse_rates(ema_rate: Any) -> list[float]:
    """'0.9999' / '0.9999,0.999' / 0.9999 / [..] -> list of floats (upstream accepts all)."""
    if isinstance(ema_rate, int | float):
        return [float(ema_rate)]
    if isinstance(ema_rate, str):
        try:
            return [float(r) for r in ema_rate.split(",") if r.strip()]
        except ValueError:
            raise UserError(f"--ema_rate: {ema_rate!r} is not a comma-separated list of numbers") from None
    return [float(r) for r in ema_rate]


def model_name(step: int) -> str:
    return f"model{step:06d}.pt"


def ema_name(rate: float, step: int) -> str:
    return f"ema_{rate}_{step:06d}.pt"


def opt_name(step: int) -> str:
    return f"opt{step:06d}.pt"


def step_files(step: int, rates: list[float]) -> list[str]:
    return [*(ema_name(r, step) for r in rates), opt_name(step), model_name(step)]


def parse_step(path: str | os.PathLike) -> int:
    """The step of a checkpoint file name (model/ema/opt); 0 when the name has none."""
    m = _STEP_RE.match(Path(path).name)
    return int(m.group(1)) if m else 0


def complete_steps(run_dir: str | os.PathLike, rates: list[float]) -> list[int]:
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        return []
    steps = {parse_step(p) for p in run_dir.glob("model*.pt") if _STEP_RE.match(p.name)}
    return sorted(s for s in steps if all((run_dir / n).is_file() for n in step_files(s, rates)))


def find_latest(run_dir: str | os.PathLike, rates: list[float]) -> int | None:
    steps = complete_steps(run_dir, rates)
    return steps[-1] if steps else None


def save_checkpoint(
    run_dir: str | os.PathLike,
    step: int,
    model_state: dict,
    ema_states: dict[float, dict],
    opt_state: dict,
) -> Path:
    """Write one complete checkpoint (model file last: its presence marks completeness)."""
    run_dir = Path(run_dir)
    for rate, state in ema_states.items():
        torch_save(run_dir / ema_name(rate, step), state)
    torch_save(run_dir / opt_name(step), opt_state)
    torch_save(run_dir / model_name(step), model_state)
    return run_dir / model_name(step)


def train_seconds_at(run_dir: str | os.PathLike, step: int) -> float | None:
    """Training wall seconds up to `step` (TrainLoop stores them in every opt file)."""
    from melcore.checkpoint_io import load_checkpoint

    value = load_checkpoint(Path(run_dir) / opt_name(step)).get("train_seconds")
    return float(value) if value is not None else None


def parse_steps(value: Any) -> frozenset[int]:
    """--keep_steps: "400,800" / "" / [400] -> the set of positive steps (UserError otherwise)."""
    parts = value.split(",") if isinstance(value, str) else list(value or [])
    try:
        steps = frozenset(int(p) for p in parts if str(p).strip())
    except ValueError:
        raise UserError(f"--keep_steps {value!r}: must be comma-separated step numbers, e.g. 400") from None
    if any(s <= 0 for s in steps):
        raise UserError(f"--keep_steps {value!r}: steps must be positive")
    return steps


def prune(
    run_dir: str | os.PathLike, keep: int, rates: list[float], protect: frozenset[int] = frozenset()
) -> list[str]:
    """Delete checkpoint files older than the last `keep` complete steps, except those of the
    steps in `protect` (--keep_steps); returns names removed."""
    if keep <= 0:
        return []
    run_dir = Path(run_dir)
    kept = complete_steps(run_dir, rates)[-keep:]
    if not kept:
        return []
    removed = []
    for p in run_dir.glob("*.pt"):
        s = parse_step(p)
        if _STEP_RE.match(p.name) and s < kept[0] and s not in protect:
            p.unlink(missing_ok=True)
            removed.append(p.name)
    return sorted(removed)


def shipped_names() -> list[str]:
    """Names of the diffusion models shipped in WEIGHTS_DIR."""
    return sorted(p.name for p in WEIGHTS_DIR.glob("*") if (p / ARGS_FILE).is_file())


def locate(path: str | os.PathLike) -> Path:
    """`path` itself, or the shipped folder WEIGHTS_DIR/<path> when `path` is a shipped name."""
    path = Path(path)
    if not path.exists() and len(path.parts) == 1 and (WEIGHTS_DIR / path / ARGS_FILE).is_file():
        return WEIGHTS_DIR / path
    return path


# -- args.json -------------------------------------------------------------------------------
def write_args(run_dir: str | os.PathLike, args: dict, mel_config: MelConfig) -> None:
    write_json(Path(run_dir) / ARGS_FILE, {**args, "mel_config": mel_config.to_dict()})


def read_args(path: str | os.PathLike) -> tuple[dict, MelConfig]:
    """(flags, MelConfig) from the args.json in `path` (a run dir, a file inside one or a shipped name)."""
    path = locate(path)
    if not path.exists():
        names = ", ".join(shipped_names()) or "none"
        raise UserError(f"{path}: does not exist (a run dir, a checkpoint in one, or a shipped model: {names})")
    run_dir = path if path.is_dir() else path.parent
    args_path = run_dir / ARGS_FILE
    if not args_path.is_file():
        raise UserError(
            f"{args_path}: missing; checkpoints must stay next to the args.json that mel_train.py "
            "wrote (copy it along with the .pt file)"
        )
    try:
        args = json.loads(args_path.read_text())
    except json.JSONDecodeError as exc:
        raise UserError(f"{args_path}: not valid JSON ({exc})") from None
    if "mel_config" not in args:
        raise UserError(f"{args_path}: has no mel_config; was it written by mel_train.py?")
    config = MelConfig.from_dict(args.pop("mel_config"), f"{args_path} mel_config")
    return args, config


def require_same_flags(stored: dict, given: dict, keys, source: str) -> None:
    """Stop when a flag given now contradicts the stored one, naming both values."""
    for k in keys:
        if k in given and given[k] is not None and k in stored and given[k] != stored[k]:
            raise UserError(
                f"--{k} {given[k]!r} contradicts {source} ({k}={stored[k]!r}); drop the flag "
                "or use a new --log_dir"
            )


# -- loading for inference ---------------------------------------------------------------------
@dataclass
class Loaded:
    model: Any
    diffusion: Any
    args: dict
    mel_config: MelConfig
    path: Path
    step: int


def resolve_weights(path: str | os.PathLike, use_ema: bool | None, rates: list[float]) -> Path:
    """The weights file to load: a run dir means its latest checkpoint; EMA by default.

    A folder of EMA files only (a shipped model, improved_diffusion/ship.py) means its latest one."""
    path = locate(path)
    if path.is_dir():
        step = find_latest(path, rates)
        if step is None:
            shipped = sorted(path.glob(f"ema_{rates[0]}_*.pt"), key=parse_step)
            if shipped and use_ema is not False:
                return shipped[-1]
            what = "holds EMA weights only" if shipped else "has no complete checkpoint (model/ema/opt files)"
            raise UserError(f"{path}: {what}")
        run_dir = path
    else:
        if not path.is_file():
            raise UserError(f"{path}: checkpoint does not exist")
        run_dir, step = path.parent, parse_step(path)
        is_ema = path.name.startswith("ema_")
        if use_ema is None or use_ema == is_ema:
            return path
    want_ema = use_ema is None or use_ema
    name = ema_name(rates[0], step) if want_ema else model_name(step)
    if not (run_dir / name).is_file():
        raise UserError(f"{run_dir / name}: not found (asked for {'EMA' if want_ema else 'raw'} weights)")
    return run_dir / name


def load_model(
    path: str | os.PathLike,
    overrides: dict | None = None,
    use_ema: bool | None = None,
    device: Any = "cpu",
    trust: bool = False,
) -> Loaded:
    """Rebuild model + diffusion from args.json beside `path` and load its weights.

    `overrides`: flags given on a command line; model flags must agree with args.json,
    sampling flags (SAMPLING_KEYS) replace the stored ones. `trust`: --trust-checkpoint.
    """
    from improved_diffusion.script_util import (
        args_to_dict,
        create_model_and_diffusion,
        model_and_diffusion_defaults,
    )
    from melcore import dist_util

    args, config = read_args(path)
    overrides = {k: v for k, v in (overrides or {}).items() if v is not None}
    defaults = model_and_diffusion_defaults()
    model_keys = [k for k in defaults if k not in SAMPLING_KEYS]
    require_same_flags(args, overrides, model_keys, f"{Path(path)} args.json")
    merged = {**defaults, **{k: v for k, v in args.items() if k in defaults}}
    merged.update({k: v for k, v in overrides.items() if k in SAMPLING_KEYS})
    weights = resolve_weights(path, use_ema, parse_rates(args.get("ema_rate", "0.9999")))
    model, diffusion = create_model_and_diffusion(**args_to_dict(_ns(merged), defaults.keys()))
    state = dist_util.load_state_dict(weights, trust=trust, map_location="cpu")
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise UserError(f"{weights}: weights do not fit the model in args.json ({exc})") from None
    model.to(device).eval()
    return Loaded(model, diffusion, merged, config, weights, parse_step(weights))


def _ns(d: dict):
    import argparse

    return argparse.Namespace(**d)
