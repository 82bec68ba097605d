"""A small CNN on fixed-width mel crops with three heads: pitch, instrument family, source.

It stands in for the Inception network of image metrics: its penultimate layer is the
embedding for the Frechet distance and its pitch/family heads give Inception-style scores.
Trained here on the prepared set, so no weights are downloaded.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from evaluation.mels import crop, fixed_crops, load_melset, normalized
from melcore.atomic import torch_save, write_json
from melcore.errors import UserError
from melcore.mel_config import MelConfig

PITCH_MIN, PITCH_MAX = 21, 108  # piano range, as NSynth
HEADS = {"pitch": PITCH_MAX - PITCH_MIN + 1, "family": 11, "source": 3}
IGNORE = -100


@dataclass
class ClassifierConfig:
    num_mels: int = 80
    crop_width: int = 64
    channels: int = 32
    embed_dim: int = 128


class MelClassifier(nn.Module):
    """Conv stack over (mel, time); pooled over time only, so the frequency position (pitch)
    survives into the embedding."""

    def __init__(self, cfg: ClassifierConfig):
        super().__init__()
        self.cfg = cfg
        c = cfg.channels
        chans = [1, c, 2 * c, 4 * c, 4 * c]
        layers: list[nn.Module] = []
        for cin, cout in zip(chans[:-1], chans[1:]):
            layers += [nn.Conv2d(cin, cout, 3, padding=1), nn.GroupNorm(8, cout), nn.SiLU()]
            layers.append(nn.MaxPool2d(2))
        self.features = nn.Sequential(*layers)
        freq = cfg.num_mels
        for _ in range(4):
            freq //= 2
        self.embed = nn.Sequential(nn.Linear(chans[-1] * freq, cfg.embed_dim), nn.SiLU())
        self.heads = nn.ModuleDict({k: nn.Linear(cfg.embed_dim, n) for k, n in HEADS.items()})

    def embedding(self, x: torch.Tensor) -> torch.Tensor:
        """x: [B, num_mels, width] normalised -> [B, embed_dim]."""
        h = self.features(x[:, None])
        h = h.mean(dim=3).flatten(1)
        return self.embed(h)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        e = self.embedding(x)
        out = {k: head(e) for k, head in self.heads.items()}
        out["embedding"] = e
        return out


def labels_of(entries: list[dict]) -> dict[str, np.ndarray]:
    """Manifest entries -> class indices per head; unknown or out-of-range labels -> IGNORE."""

    def index(value, offset: int, n: int) -> int:
        if value is None:
            return IGNORE
        i = int(value) - offset
        return i if 0 <= i < n else IGNORE

    return {
        "pitch": np.array([index(e.get("pitch"), PITCH_MIN, HEADS["pitch"]) for e in entries]),
        "family": np.array([index(e.get("instrument_family"), 0, HEADS["family"]) for e in entries]),
        "source": np.array([index(e.get("instrument_source"), 0, HEADS["source"]) for e in entries]),
    }


@torch.no_grad()
def predict(model: MelClassifier, x: np.ndarray, batch_size: int = 64) -> dict[str, np.ndarray]:
    """Normalised crops [N, num_mels, width] -> embeddings and softmax probabilities per head."""
    model.eval()
    outs: dict[str, list[np.ndarray]] = {}
    for i in range(0, len(x), batch_size):
        out = model(torch.from_numpy(np.ascontiguousarray(x[i : i + batch_size])))
        for k, v in out.items():
            v = v if k == "embedding" else F.softmax(v, dim=1)
            outs.setdefault(k, []).append(v.numpy().astype(np.float64))
    return {k: np.concatenate(v) for k, v in outs.items()}


def accuracy(model: MelClassifier, x: np.ndarray, labels: dict[str, np.ndarray]) -> dict:
    probs = predict(model, x)
    acc = {}
    for k in HEADS:
        keep = labels[k] != IGNORE
        acc[k] = float((probs[k][keep].argmax(1) == labels[k][keep]).mean()) if keep.any() else None
    return acc


def train_classifier(
    train_mels: list[np.ndarray],
    train_entries: list[dict],
    config: MelConfig,
    cfg: ClassifierConfig | None = None,
    max_steps: int = 1500,
    batch_size: int = 32,
    lr: float = 2e-3,
    seed: int = 0,
) -> MelClassifier:
    """Adam on fresh random crops every step; heads without labels are skipped."""
    cfg = cfg or ClassifierConfig(num_mels=config.num_mels)
    if not train_mels:
        raise UserError("classifier: the train split is empty; prepare a mel set with train clips")
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    labels = labels_of(train_entries)
    model = MelClassifier(cfg)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, max(1, max_steps))
    model.train()
    for _ in tqdm(range(max_steps), desc="classifier", leave=False):
        idx = rng.integers(0, len(train_mels), size=batch_size)
        x = np.stack([crop(train_mels[i], cfg.crop_width, rng) for i in idx])
        x = torch.from_numpy(normalized(x, config))
        out = model(x)
        loss = torch.zeros(())
        for k in HEADS:
            y = torch.from_numpy(labels[k][idx])
            if (y != IGNORE).any():
                loss = loss + F.cross_entropy(out[k], y, ignore_index=IGNORE)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
    model.eval()
    return model


def evaluate_accuracy(
    model: MelClassifier, mels: list[np.ndarray], entries: list[dict], config: MelConfig, seed: int = 1
) -> dict:
    x = normalized(fixed_crops(mels, model.cfg.crop_width, seed), config)
    return accuracy(model, x, labels_of(entries))


def fit_classifier(
    data_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    max_steps: int = 1500,
    batch_size: int = 32,
    crop_width: int = 64,
    channels: int = 32,
    lr: float = 2e-3,
    seed: int = 0,
) -> dict:
    """train_classifier.py: train on a mel set's train split, save it (classifier.json last, so
    its presence marks a complete classifier) and return the accuracies per split."""
    if max_steps < 1 or crop_width < 16 or channels < 8 or channels % 8:
        raise UserError("--max_steps must be >= 1, --crop_width >= 16, --channels a multiple of 8")
    train = load_melset(data_dir, "train")
    cfg = ClassifierConfig(num_mels=train.config.num_mels, crop_width=crop_width, channels=channels)
    model = train_classifier(train.mels, train.labels, train.config, cfg, max_steps, batch_size, lr, seed)
    acc = {"train": evaluate_accuracy(model, train.mels, train.labels, train.config)}
    for split in ("test", "valid"):
        held = load_melset(data_dir, split)
        if len(held):
            acc[split] = evaluate_accuracy(model, held.mels, held.labels, train.config)
            break
    write_json(Path(out_dir) / "accuracies.json", acc)
    info = {"data_dir": str(data_dir), "max_steps": max_steps, "seed": seed, "accuracy": acc}
    save_classifier(out_dir, model, train.config, info)
    return acc


def save_classifier(out_dir: str | os.PathLike, model: MelClassifier, config: MelConfig, info: dict) -> None:
    out = Path(out_dir)
    torch_save(out / "classifier.pt", model.state_dict())
    write_json(out / "classifier.json", {"classifier": asdict(model.cfg), "mel_config": config.to_dict(), **info})


def load_classifier(out_dir: str | os.PathLike) -> tuple[MelClassifier, MelConfig]:
    out = Path(out_dir)
    cfg_path, weights = out / "classifier.json", out / "classifier.pt"
    for p in (cfg_path, weights):
        if not p.is_file():
            raise UserError(f"{p}: missing; train one with scripts/train_classifier.py --out {out}")
    meta = json.loads(cfg_path.read_text())
    model = MelClassifier(ClassifierConfig(**meta["classifier"]))
    model.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
    model.eval()
    return model, MelConfig.from_dict(meta["mel_config"], str(cfg_path))
