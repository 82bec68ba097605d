"""Tiny prepared mel sets for tests, written in the DESIGN.md layout (no prep code needed)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from melcore.mel_config import MelConfig


def tiny_config(num_mels: int = 16) -> MelConfig:
    return MelConfig(num_mels=num_mels, preset="16k", sampling_rate=16000)


def make_melset(
    root: Path,
    frames: dict[str, list[int]] | None = None,
    num_mels: int = 16,
    seed: int = 0,
    config: MelConfig | None = None,
) -> Path:
    """Clips with smooth, structured log-mels (values in [-11, 2]) per split; returns root."""
    frames = frames or {"train": [40, 24, 33, 50], "valid": [32, 20], "test": [32]}
    config = config or tiny_config(num_mels)
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    lines = []
    for split, lengths in frames.items():
        (root / split).mkdir(exist_ok=True)
        for i, n in enumerate(lengths):
            cid = f"{split}_{i:03d}"
            bins = np.linspace(0, 1, config.num_mels)[:, None]
            t = np.arange(n)[None, :]
            mel = -4.5 + 5.0 * np.cos(2 * np.pi * (bins * (1 + i % 3) + t / (8 + i))) * (1 - bins)
            mel = mel + 0.3 * rng.standard_normal(mel.shape)
            np.save(root / split / f"{cid}.npy", np.clip(mel, -11, 2).astype(np.float32))
            lines.append({"id": cid, "split": split, "source": f"{cid}.wav", "frames": n,
                          "instrument_family": i % 3})
    (root / "manifest.jsonl").write_text("".join(json.dumps(e) + "\n" for e in lines))
    (root / "mel_config.json").write_text(config.to_json())
    return root


# A tiny model: 32 channels (GroupNorm needs 32), one res block, two levels, no attention,
# 20 cosine-schedule steps (a 20-step linear schedule reaches beta = 1).
TINY_MODEL = dict(
    num_channels=32,
    num_res_blocks=1,
    channel_mult="1,2",
    attention_resolutions="",
    num_mels=16,
    crop_width=16,
    diffusion_steps=20,
    noise_schedule="cosine",
)


def tiny_train_args(data_dir, log_dir, **overrides) -> dict:
    """Every mel_train.py flag at its default, with a tiny model and quick intervals."""
    from improved_diffusion.script_util import model_and_diffusion_defaults, training_defaults

    args = {**model_and_diffusion_defaults(), **training_defaults(), **TINY_MODEL}
    args.update(
        data_dir=str(data_dir), log_dir=str(log_dir), batch_size=4, lr=1e-3, max_steps=6,
        save_interval=3, log_interval=3, val_interval=0, sample_interval=0, num_workers=0,
        precision="fp32",  # the default "auto" would make numbers depend on the CPU (AMX: bf16)
    )
    args.update(overrides)
    return args


def to_flags(args: dict) -> list[str]:
    return [x for k, v in args.items() for x in (f"--{k}", str(v))]


def run_cli(name, argv, monkeypatch, capsys):
    """Run scripts/<name>.py main() in this process; returns (exit code, stdout, stderr)."""
    import importlib.util
    import sys

    root = Path(__file__).resolve().parents[1]
    spec = importlib.util.spec_from_file_location(name, root / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    monkeypatch.setattr(sys, "argv", [name, *map(str, argv)])
    code = 0
    try:
        module.main()
    except SystemExit as exc:
        code = exc.code
    out, err = capsys.readouterr()
    return code, out, err


def train_tiny_run(root: Path, name: str = "run", **overrides) -> Path:
    """A tiny run trained on one thread on root/mels (made when missing); returns its folder."""
    import torch

    from evaluation.pipeline import train_from_args

    mels = root / "mels"
    if not (mels / "manifest.jsonl").is_file():
        make_melset(mels)
    torch.set_num_threads(1)
    train_from_args(tiny_train_args(mels, root / name, **overrides), progress=False)
    return root / name
