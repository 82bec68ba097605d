"""Copy-synthesis quality of vocoders: original clip -> mel -> vocoder -> audio, compared.

For held-out (test split) notes of a prepared mel set, each vocoder (the pretrained universal
HiFi-GAN when the set's config is its analysis, Griffin-Lim always, and any given checkpoints)
vocodes the stored mel; we measure
  - mel L1: the vocoded audio re-analysed with the same MelConfig vs the stored mel,
  - multi-resolution STFT distance to the original clip (16 kHz): spectral convergence and
    log-magnitude L1, averaged over three resolutions (n_fft/hop/win 512/50/240,
    1024/120/600, 2048/240/1200, as in Parallel WaveGAN),
  - for pitched notes (manifest `pitch`), the energy between harmonics relative to the
    harmonics in dB: how much noise a vocoder adds to a clean tone.
Results go to results.json, results.md and a listening page index.html.
"""

from __future__ import annotations

import html
import json
import os
import warnings
from pathlib import Path

import numpy as np

from hifigan.meldataset import audio_to_mel
from hifigan.stft_loss import RESOLUTIONS
from melcore.atomic import write_json, write_text
from melcore.audio import read_audio, resample, write_wav
from melcore.mel_config import CLIP_RATE, MelConfig


def _stft_mag(y: np.ndarray, n_fft: int, hop: int, win: int) -> np.ndarray:
    import librosa

    return np.abs(librosa.stft(y, n_fft=n_fft, hop_length=hop, win_length=win, window="hann"))


def mrstft(y: np.ndarray, ref: np.ndarray) -> dict[str, float]:
    """Multi-resolution STFT distance of `y` to `ref` (same rate): mean SC and log-mag L1."""
    n = min(len(y), len(ref))
    y, ref = y[:n].astype(np.float32), ref[:n].astype(np.float32)
    sc, mag = [], []
    for n_fft, hop, win in RESOLUTIONS:
        s, r = _stft_mag(y, n_fft, hop, win), _stft_mag(ref, n_fft, hop, win)
        sc.append(np.linalg.norm(r - s) / max(np.linalg.norm(r), 1e-8))
        mag.append(np.mean(np.abs(np.log(np.clip(r, 1e-7, None)) - np.log(np.clip(s, 1e-7, None)))))
    return {"spectral_convergence": float(np.mean(sc)), "log_mag_l1": float(np.mean(mag))}


def mel_l1(audio: np.ndarray, sr: int, mel: np.ndarray, config: MelConfig) -> float:
    """L1 between `mel` and the mel of `audio` (at `sr`) taken with the same config."""
    again = audio_to_mel(audio, config, sr=sr)
    n = min(again.shape[1], mel.shape[1])
    return float(np.mean(np.abs(again[:, :n] - mel[:, :n])))


def between_harmonics_db(y: np.ndarray, sr: int, f0: float, fmax: float = 7000.0) -> float:
    """Mean power between harmonics over mean power at harmonics, in dB (lower = cleaner)."""
    y = y[len(y) // 10 : len(y) // 2]  # the sustained part after the attack
    spec = np.abs(np.fft.rfft(y * np.hanning(len(y)))) ** 2
    freqs = np.fft.rfftfreq(len(y), 1 / sr)
    at, between = [], []
    k = 1
    while (k + 0.5) * f0 < min(fmax, sr / 2):
        at.append(spec[np.abs(freqs - k * f0) < 0.03 * f0].max(initial=0.0))
        between.append(spec[np.abs(freqs - (k + 0.5) * f0) < 0.2 * f0].mean())
        k += 1
    if not at:
        return float("nan")
    return float(10 * np.log10((np.mean(between) + 1e-20) / (np.mean(at) + 1e-20)))


# -- test material ---------------------------------------------------------------------------
def make_synthetic_notes(
    root: str | os.PathLike, num: int = 10, preset: str = "universal", seed: int = 0, seconds: float = 4.0
) -> Path:
    """NSynth-like notes (4 s by default) at 16 kHz (pure sines and decaying harmonic tones) written as
    WAVs in `root/audio` and a mel set in `root/mels` (all in the test split)."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    config = MelConfig.from_preset(preset)
    mels = root / "mels"
    t = np.arange(int(seconds * CLIP_RATE)) / CLIP_RATE
    # NSynth-like: key held for 3/4 of the note, then a release.
    off = 0.75 * seconds
    env = np.minimum(1.0, t / 0.01) * np.where(t < off, 1.0, np.maximum(0.0, 1 - (t - off) / (0.125 * seconds)))
    entries = []
    for i in range(num):
        pitch = int(rng.integers(45, 85))
        f0 = 440.0 * 2 ** ((pitch - 69) / 12)
        if i % 2 == 0:
            kind, y = "sine", np.sin(2 * np.pi * f0 * t)
        else:
            kind = "harmonic"
            decay = rng.uniform(1.0, 3.0)
            y = sum(np.sin(2 * np.pi * k * f0 * t + rng.uniform(0, 6.28)) * np.exp(-decay * k * t) / k
                    for k in range(1, 12) if k * f0 < 7500)
        y = (0.5 * env * y / np.max(np.abs(y))).astype(np.float32)
        cid = f"{kind}_{i:03d}-{pitch:03d}-100"
        write_wav(root / "audio" / f"{cid}.wav", y, CLIP_RATE)
        mel = audio_to_mel(y, config)
        (mels / "test").mkdir(parents=True, exist_ok=True)
        np.save(mels / "test" / f"{cid}.npy", mel)
        entries.append({"id": cid, "split": "test", "source": str((root / "audio" / f"{cid}.wav").resolve()),
                        "frames": int(mel.shape[1]), "pitch": pitch, "velocity": 100})
    config.save(mels / "mel_config.json")
    write_text(mels / "manifest.jsonl", "".join(json.dumps(e) + "\n" for e in entries))
    return mels


# -- the comparison --------------------------------------------------------------------------
def evaluate(
    mel_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    num: int = 10,
    checkpoints: list[str] | None = None,
    audio_root: str | None = None,
    device: str = "cpu",
    trust: bool = False,
) -> dict:
    """Vocode up to `num` test-split notes with every available vocoder; write results.
    `trust`: --trust-checkpoint, for the vocoder `checkpoints`."""
    from tqdm import tqdm

    from hifigan.inference import vocoder_for
    from melcore.melset import MelSet, resolve_source, source_roots

    out = Path(out_dir)
    melset = MelSet(mel_dir, split="test")
    if len(melset) == 0:
        melset = MelSet(mel_dir, split="valid")
    config = melset.config
    vocoders = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if config.preset == "universal" or not config.differences(MelConfig.from_preset("universal")):
            vocoders.append(("universal", vocoder_for(config, device=device)))
        vocoders.append(("griffin-lim", vocoder_for(config, griffin_lim=True)))
        for i, ck in enumerate(checkpoints or []):
            vocoders.append((f"checkpoint{i}", vocoder_for(config, checkpoint=ck, device=device, trust=trust)))
    roots = source_roots(mel_dir, audio_root)
    rows = []
    for idx in tqdm(range(min(num, len(melset))), desc="copy synthesis", unit="note"):
        e = melset.entries[idx]
        mel = melset.load(idx)
        src = resolve_source(e["source"], roots)
        if src is None:
            raise FileNotFoundError(f"{e['source']}: source of {e['id']} not found; pass --audio_root")
        orig, _ = read_audio(src, CLIP_RATE)
        orig = orig * (config.peak_normalize / max(np.abs(orig).max(), 1e-9)) if config.peak_normalize else orig
        write_wav(out / "original" / f"{e['id']}.wav", orig, CLIP_RATE)
        f0 = 440.0 * 2 ** ((e["pitch"] - 69) / 12) if "pitch" in e else None
        row = {"id": e["id"], "f0": f0, "original_between_harmonics_db":
               between_harmonics_db(orig, CLIP_RATE, f0) if f0 else None, "vocoders": {}}
        for name, voc in vocoders:
            audio = voc(mel)[0]
            at16 = resample(audio, voc.sampling_rate, CLIP_RATE)
            write_wav(out / name / f"{e['id']}.wav", at16, CLIP_RATE)
            m = {"mel_l1": mel_l1(audio, voc.sampling_rate, mel, config), **mrstft(at16, orig)}
            if f0:
                m["between_harmonics_db"] = between_harmonics_db(at16, CLIP_RATE, f0)
            row["vocoders"][name] = m
        rows.append(row)
    summary = {}
    for name, voc in vocoders:
        keys = rows[0]["vocoders"][name].keys() if rows else []
        summary[name] = {k: float(np.nanmean([r["vocoders"][name][k] for r in rows])) for k in keys}
        summary[name]["vocoder"] = voc.name
    origs = [r["original_between_harmonics_db"] for r in rows if r["original_between_harmonics_db"] is not None]
    result = {"mel_dir": str(mel_dir), "notes": len(rows), "mel_config": config.to_dict(),
              "original_between_harmonics_db": float(np.mean(origs)) if origs else None,
              "summary": summary, "per_note": rows}
    write_json(out / "results.json", result)
    write_text(out / "results.md", markdown_table(result))
    write_text(out / "index.html", listening_page(rows, [n for n, _ in vocoders]))
    return result


def markdown_table(result: dict) -> str:
    lines = [
        f"Copy synthesis on {result['notes']} notes (mel L1 re-analysed; MR-STFT vs the original at 16 kHz)",
        "",
        "| vocoder | mel L1 | spectral convergence | log-mag L1 | between-harmonics dB |",
        "|---|---|---|---|---|",
    ]
    if result.get("original_between_harmonics_db") is not None:
        lines.append(f"| original | 0 | 0 | 0 | {result['original_between_harmonics_db']:.1f} |")
    for name, s in result["summary"].items():
        bh = s.get("between_harmonics_db")
        lines.append(f"| {name} | {s['mel_l1']:.3f} | {s['spectral_convergence']:.3f} | {s['log_mag_l1']:.3f} | "
                     f"{'' if bh is None else f'{bh:.1f}'} |")
    return "\n".join(lines) + "\n"


def listening_page(rows: list[dict], names: list[str]) -> str:
    cols = ["original", *names]
    head = "".join(f"<th>{html.escape(c)}</th>" for c in cols)
    body = []
    for r in rows:
        cells = "".join(
            f'<td><audio controls preload="none" src="{html.escape(c)}/{html.escape(r["id"])}.wav"></audio></td>'
            for c in cols
        )
        body.append(f"<tr><td>{html.escape(r['id'])}</td>{cells}</tr>")
    return ("<!doctype html><meta charset='utf-8'><title>copy synthesis</title>"
            "<h1>Copy synthesis: original vs vocoders</h1>"
            f"<table border=1><tr><th>note</th>{head}</tr>{''.join(body)}</table>\n")
