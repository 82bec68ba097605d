"""Copy-synthesis quality of vocoders: original clip -> mel -> vocoder -> audio, compared.

Up to two note sets are measured side by side in one run: (a) the held-out test split of a
prepared mel set (`mel_dir`; its valid split when it has no test split) and optionally (b) a
set the vocoders never saw (`other_mel_dir`, e.g. notes rendered from another SoundFont: all
of its splits are used). From each, up to `num` notes are taken, evenly spaced through the set
(so a set sorted by instrument yields several instruments, not one).

Vocoders: "notes" (the shipped note vocoder, when hifigan/weights/ has it), "universal" (the
pretrained speech HiFi-GAN; both only for mels of its analysis), "griffin-lim" always, and
"checkpoint0", "checkpoint1", ... for given checkpoints. Each one vocodes the stored mel, and
the same metrics are taken for it and for the original clip:
  - mel L1: the audio re-analysed with the same MelConfig vs the stored mel (for the original,
    how well re-analysis reproduces the stored mel: about 0),
  - multi-resolution STFT distance to the original clip (16 kHz): spectral convergence (SC) and
    log-magnitude L1, each averaged over three resolutions (n_fft/hop/win 512/50/240,
    1024/120/600, 2048/240/1200, as in Parallel WaveGAN), and MR-STFT = SC + log-mag L1, the
    one-number distance that hifigan.stft_loss trains with (0 = the original's spectrum),
  - for pitched notes (manifest `pitch`, MIDI): the energy between harmonics relative to the
    harmonics in dB (how much noise a vocoder adds to a clean tone) and the pitch error, the
    f0 of the sustained part (`estimate_f0`) against the nominal pitch in |cents|; the
    original's own deviation (tuning of the source) is the reference row,
  - speed as x real time: audio seconds / wall seconds of the vocoder calls, summed over notes.
    It depends on the device and on torch's thread count (OMP_NUM_THREADS; recorded in the
    results), and on what else the machine runs (the load average is recorded too).
results.json has one section per set (and, for evaluation.findings, the first set's `summary`
and `notes` at the top), results.md one table per set and the issue-#13 goals as met / not
met with their numbers; index.html is one listening page with both sets.
"""

from __future__ import annotations

import html
import json
import math
import os
import time
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from hifigan.meldataset import audio_to_mel
from hifigan.stft_loss import RESOLUTIONS
from melcore.atomic import write_json, write_text
from melcore.audio import read_audio, resample, write_wav
from melcore.errors import UserError
from melcore.mel_config import ANALYSIS_FIELDS, CLIP_RATE, MelConfig, require_match
from melcore.melset import MelSet, resolve_source, source_roots

if TYPE_CHECKING:  # hifigan.inference loads torch: imported where a vocoder is built
    from hifigan.inference import Vocoder

# Pitch estimation (estimate_f0): harmonics searched, the search window around each k * f0,
# and how far a harmonic's peak must stand above the spectrum around it to count as a tone.
PITCH_HARMONICS = 8
PITCH_SEARCH_CENTS = 50.0
PITCH_PROMINENCE_DB = 15.0
PITCH_TOLERANCE_CENTS = 10.0

# Issue #13's goals for the new note vocoder.
GOAL_GAIN_OVER_GRIFFIN_LIM = 0.30
GOAL_X_REAL_TIME = 20.0

SET_TITLES = {"test": "held-out test instruments", "other": "unseen set (all splits)"}


def _stft_mag(y: np.ndarray, n_fft: int, hop: int, win: int) -> np.ndarray:
    import librosa

    return np.abs(librosa.stft(y, n_fft=n_fft, hop_length=hop, win_length=win, window="hann"))


def mrstft(y: np.ndarray, ref: np.ndarray) -> dict[str, float]:
    """Multi-resolution STFT distance of `y` to `ref` (same rate): mean SC and log-mag L1
    (their sum is the MR-STFT distance)."""
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


def sustained(y: np.ndarray) -> np.ndarray:
    """The sustained part of a note, after the attack and before the release (10%-50%)."""
    return y[len(y) // 10 : len(y) // 2]


def between_harmonics_db(y: np.ndarray, sr: int, f0: float, fmax: float = 7000.0) -> float:
    """Mean power between harmonics over mean power at harmonics, in dB (lower = cleaner)."""
    y = sustained(y)
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


def midi_to_hz(pitch: float) -> float:
    return 440.0 * 2 ** ((pitch - 69) / 12)


def cents(f: float, ref: float) -> float:
    """Signed distance of `f` from `ref` in cents (NaN when either is not a frequency)."""
    if not (f > 0 and ref > 0):
        return float("nan")
    return float(1200 * math.log2(f / ref))


def estimate_f0(
    y: np.ndarray,
    sr: int,
    f0: float,
    harmonics: int = PITCH_HARMONICS,
    search_cents: float = PITCH_SEARCH_CENTS,
    prominence_db: float = PITCH_PROMINENCE_DB,
) -> float:
    """The f0 (Hz) of the sustained part of `y` near the nominal `f0`, or NaN (silence, noise).

    Of the first `harmonics` harmonics, the strongest spectral peak that lies inside
    k * f0 +- `search_cents` and stands `prominence_db` above the median power of the band
    k * f0 +- f0 / 2 is taken; its frequency, from a 4x zero-padded Hann FFT refined by
    parabolic interpolation of the log power, divided by k, is the f0. Searching only near the
    nominal harmonics keeps it fast and immune to octave errors of a general pitch tracker, and
    a high harmonic resolves cents k times finer, which is what makes low notes (MIDI 28 =
    41 Hz, whose fundamental is often weak) measurable from a ~1.6 s segment.
    """
    seg = np.asarray(sustained(np.asarray(y, dtype=np.float64)))
    if seg.size < 64 or not f0 > 0:
        return float("nan")
    seg = seg - seg.mean()
    if np.sqrt(np.mean(seg**2)) < 1e-5:  # silence (-100 dBFS): no peak is meaningful
        return float("nan")
    n_fft = 1 << int(math.ceil(math.log2(4 * seg.size)))
    power = np.abs(np.fft.rfft(seg * np.hanning(seg.size), n_fft)) ** 2 + 1e-30
    df = sr / n_fft
    ratio = 2 ** (search_cents / 1200)
    best: tuple[float, int, int] | None = None  # (power, bin, k)
    for k in range(1, harmonics + 1):
        lo, hi = int(math.ceil(k * f0 / ratio / df)), int(k * f0 * ratio / df)
        if hi + 1 >= power.size or (k * f0 + f0 / 2) >= sr / 2:
            break
        if hi - lo < 2:
            continue
        i = lo + int(np.argmax(power[lo : hi + 1]))
        if i in (lo, hi):  # the maximum is the window's edge: no peak inside it
            continue
        band = power[max(1, int((k * f0 - f0 / 2) / df)) : int((k * f0 + f0 / 2) / df)]
        if power[i] < np.median(band) * 10 ** (prominence_db / 10):
            continue
        if best is None or power[i] > best[0]:
            best = (float(power[i]), i, k)
    if best is None:
        return float("nan")
    _, i, k = best
    a, b, c = np.log(power[i - 1 : i + 2])
    shift = 0.5 * (a - c) / (a - 2 * b + c) if (a - 2 * b + c) < 0 else 0.0
    return float((i + shift) * df / k)


def pitch_error_cents(y: np.ndarray, sr: int, pitch: float) -> float:
    """|cents| of the f0 of `y` (estimate_f0) from MIDI `pitch`; NaN when it has no pitch."""
    return abs(cents(estimate_f0(y, sr, midi_to_hz(pitch)), midi_to_hz(pitch)))


# -- test material ---------------------------------------------------------------------------
def make_synthetic_notes(
    root: str | os.PathLike,
    num: int = 10,
    preset: str = "universal",
    seed: int = 0,
    seconds: float = 4.0,
    splits: tuple[str, ...] = ("test",),
) -> Path:
    """NSynth-like notes (4 s by default) at 16 kHz (pure sines and decaying harmonic tones) written as
    WAVs in `root/audio` and a mel set in `root/mels`, dealt round-robin into `splits`."""
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
        f0 = midi_to_hz(pitch)
        if i % 2 == 0:
            kind, y = "sine", np.sin(2 * np.pi * f0 * t)
        else:
            kind = "harmonic"
            decay = rng.uniform(1.0, 3.0)
            y = sum(np.sin(2 * np.pi * k * f0 * t + rng.uniform(0, 6.28)) * np.exp(-decay * k * t) / k
                    for k in range(1, 12) if k * f0 < 7500)
        y = (0.5 * env * y / np.max(np.abs(y))).astype(np.float32)
        cid = f"{kind}_{i:03d}-{pitch:03d}-100"
        split = splits[i % len(splits)]
        write_wav(root / "audio" / f"{cid}.wav", y, CLIP_RATE)
        # The mel of the clip as written (16-bit), as prep_mels.py takes it: the float tone's
        # empty mel bands would otherwise sit at the log floor, below the WAV's dither.
        mel = audio_to_mel(read_audio(root / "audio" / f"{cid}.wav", CLIP_RATE)[0], config)
        (mels / split).mkdir(parents=True, exist_ok=True)
        np.save(mels / split / f"{cid}.npy", mel)
        entries.append({"id": cid, "split": split, "source": str((root / "audio" / f"{cid}.wav").resolve()),
                        "frames": int(mel.shape[1]), "pitch": pitch, "velocity": 100})
    config.save(mels / "mel_config.json")
    write_text(mels / "manifest.jsonl", "".join(json.dumps(e) + "\n" for e in entries))
    return mels


# -- vocoders --------------------------------------------------------------------------------
def default_vocoder_names(config: MelConfig) -> list[str]:
    """The named vocoders that apply to mels of `config`: the note vocoder when shipped and the
    universal one for the universal analysis (both are trained on it), Griffin-Lim always."""
    from hifigan.inference import notes_weights

    universal = not config.differences(MelConfig.from_preset("universal"), ANALYSIS_FIELDS)
    names = ["notes"] if universal and notes_weights() is not None else []
    return names + (["universal"] if universal else []) + ["griffin-lim"]


def build_vocoders(
    config: MelConfig,
    names: list[str] | None = None,
    checkpoints: list[str] | None = None,
    device: str = "cpu",
    trust: bool = False,
) -> list[tuple[str, Vocoder]]:
    """[(name, Vocoder)]: `names` (default: default_vocoder_names) then checkpoint0, 1, ..."""
    from hifigan.inference import VOCODER_NAMES, vocoder_for

    available = default_vocoder_names(config)
    if names is None:
        names = available
    for n in names:
        if n not in VOCODER_NAMES:
            raise UserError(f"--vocoders {n!r}: unknown; choose from {', '.join(VOCODER_NAMES)}")
        if n not in available:
            why = "is not shipped in hifigan/weights/" if n == "notes" else "needs mels of the universal preset"
            raise UserError(f"--vocoders {n!r}: not available here ({n} {why}); choose from {', '.join(available)}")
    if not names and not checkpoints:
        raise UserError("--vocoders chose none and no --checkpoint was given: nothing to measure")
    out: list[tuple[str, Vocoder]] = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for n in names:
            out.append((n, vocoder_for(config, checkpoint=n, device=device)))
        for i, ck in enumerate(checkpoints or []):
            out.append((f"checkpoint{i}", vocoder_for(config, checkpoint=ck, device=device, trust=trust)))
    return out


# -- the comparison --------------------------------------------------------------------------
def pick(total: int, num: int) -> list[int]:
    """Up to `num` indices of `total`, evenly spaced from the first to the last."""
    if total <= num:
        return list(range(total))
    return sorted({int(round(i)) for i in np.linspace(0, total - 1, num)})


def _finite(values) -> list[float]:
    return [float(v) for v in values if v is not None and np.isfinite(v)]


def _or_none(x: float) -> float | None:
    return float(x) if x is not None and np.isfinite(x) else None


def note_metrics(
    audio16: np.ndarray, audio: np.ndarray, sr: int, mel: np.ndarray, orig: np.ndarray,
    config: MelConfig, pitch: float | None, orig_f0: float | None,
) -> dict:
    """Every metric of one vocoded (or original) note; `audio` at `sr`, `audio16` at 16 kHz."""
    m = {"mel_l1": mel_l1(audio, sr, mel, config), **mrstft(audio16, orig)}
    m["mrstft"] = m["spectral_convergence"] + m["log_mag_l1"]
    if pitch is not None:
        f0 = midi_to_hz(pitch)
        est = estimate_f0(audio16, CLIP_RATE, f0)
        m["between_harmonics_db"] = _or_none(between_harmonics_db(audio16, CLIP_RATE, f0))
        m["f0_hz"] = _or_none(est)
        m["pitch_error_cents"] = _or_none(abs(cents(est, f0)))
        m["pitch_vs_original_cents"] = _or_none(abs(cents(est, orig_f0 or float("nan"))))
    return m


def summarize(metrics: list[dict], pitched: int) -> dict:
    """Means over notes (NaN/None left out), the median |pitch error| and the share within
    PITCH_TOLERANCE_CENTS out of the `pitched` notes whose original has a measurable f0."""
    s: dict = {}
    for k in ("mel_l1", "spectral_convergence", "log_mag_l1", "mrstft", "between_harmonics_db"):
        vals = _finite(m.get(k) for m in metrics)
        s[k] = float(np.mean(vals)) if vals else None
    errs = _finite(m.get("pitch_error_cents") for m in metrics)
    s["pitch_error_cents_median"] = float(np.median(errs)) if errs else None
    s["pitch_error_cents_mean"] = float(np.mean(errs)) if errs else None
    s["pitch_measured"] = len(errs)
    within = sum(e <= PITCH_TOLERANCE_CENTS for e in errs)
    s["pitch_within_10_cents"] = within / pitched if pitched else None
    rel = _finite(m.get("pitch_vs_original_cents") for m in metrics)
    s["pitch_vs_original_cents_median"] = float(np.median(rel)) if rel else None
    return s


def evaluate_set(
    melset: MelSet, indices: list[int], vocoders: list[tuple[str, Vocoder]], out: Path, audio_root: str | None = None,
) -> dict:
    """Copy synthesis of `melset`'s notes at `indices`: WAVs under `out/<vocoder>/`, one section."""
    from tqdm import tqdm

    config = melset.config
    roots = source_roots(melset.root, audio_root)
    rows = []
    seconds = {n: [0.0, 0.0] for n, _ in vocoders}  # name -> [audio s, wall s]
    for idx in tqdm(indices, desc=f"copy synthesis ({melset.root.name})", unit="note"):
        e = melset.entries[idx]
        mel = melset.load(idx)
        src = resolve_source(e["source"], roots)
        if src is None:
            raise UserError(f"{e['source']}: source of {e['id']} not found; pass --audio_root")
        orig, _ = read_audio(src, CLIP_RATE)
        orig = orig * (config.peak_normalize / max(np.abs(orig).max(), 1e-9)) if config.peak_normalize else orig
        write_wav(out / "original" / f"{e['id']}.wav", orig, CLIP_RATE)
        pitch = e.get("pitch")
        orig_f0 = estimate_f0(orig, CLIP_RATE, midi_to_hz(pitch)) if pitch is not None else None
        row = {"id": e["id"], "split": e["split"], "pitch": pitch,
               "f0": midi_to_hz(pitch) if pitch is not None else None,
               "original": note_metrics(orig, orig, CLIP_RATE, mel, orig, config, pitch, orig_f0),
               "vocoders": {}}
        for name, voc in vocoders:
            start = time.perf_counter()
            audio = voc(mel)[0]
            wall = time.perf_counter() - start
            seconds[name][0] += len(audio) / voc.sampling_rate
            seconds[name][1] += wall
            at16 = resample(audio, voc.sampling_rate, CLIP_RATE)
            write_wav(out / name / f"{e['id']}.wav", at16, CLIP_RATE)
            row["vocoders"][name] = {**note_metrics(at16, audio, voc.sampling_rate, mel, orig, config, pitch,
                                                    orig_f0), "seconds": wall}
        rows.append(row)
    # The share within tolerance counts notes whose original has a pitch: a vocoder that
    # loses the pitch (NaN) misses, instead of dropping out.
    pitched = sum(r["original"].get("f0_hz") is not None for r in rows)
    summary = {}
    for name, voc in vocoders:
        summary[name] = summarize([r["vocoders"][name] for r in rows], pitched)
        audio_s, wall_s = seconds[name]
        summary[name].update(vocoder=voc.name, audio_seconds=audio_s, vocode_seconds=wall_s,
                             x_real_time=audio_s / wall_s if wall_s > 0 else None)
    return {"mel_dir": str(melset.root), "splits": sorted({r["split"] for r in rows}), "notes": len(rows),
            "pitched_notes": pitched, "mel_config": config.to_dict(),
            "original": summarize([r["original"] for r in rows], pitched), "summary": summary, "per_note": rows}


def _warm_up(vocoders: list[tuple[str, Vocoder]], mel: np.ndarray) -> None:
    """One untimed call each: the first call pays one-off costs (allocator, kernels) that a
    batch vocoding job does not pay per note."""
    for _, voc in vocoders:
        voc(mel[:, :32])


def evaluate(
    mel_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    num: int = 10,
    checkpoints: list[str] | None = None,
    audio_root: str | None = None,
    device: str = "cpu",
    trust: bool = False,
    other_mel_dir: str | os.PathLike | None = None,
    other_audio_root: str | None = None,
    vocoders: list[str] | None = None,
) -> dict:
    """Vocode up to `num` notes of `mel_dir`'s test split (and of all of `other_mel_dir`) with
    every chosen vocoder (`vocoders`: names, default default_vocoder_names, plus `checkpoints`);
    write results.json, results.md, index.html and the WAVs under `out_dir/<set>/<vocoder>/`.
    `trust`: --trust-checkpoint, for the vocoder `checkpoints`."""
    import torch

    out = Path(out_dir)
    melset = MelSet(mel_dir, split="test")
    if len(melset) == 0:
        melset = MelSet(mel_dir, split="valid")
    sets = [("test", melset, audio_root)]
    if other_mel_dir is not None:
        other = MelSet(other_mel_dir)
        require_match(melset.config, other.config, f"--mel_dir {mel_dir}", f"--other_mel_dir {other_mel_dir}",
                      ANALYSIS_FIELDS)
        sets.append(("other", other, other_audio_root))
    for key, ms, _ in sets:
        if len(ms) == 0:
            raise UserError(f"{ms.root}: no notes to measure in {'its test/valid split' if key == 'test' else 'it'}")
    built = build_vocoders(melset.config, vocoders, checkpoints, device, trust)
    _warm_up(built, melset.load(0))
    sections = {key: evaluate_set(ms, pick(len(ms), num), built, out / key, root) for key, ms, root in sets}
    for key, sec in sections.items():
        sec["title"] = SET_TITLES[key] if key == "other" or melset.split == "test" else "held-out valid split"
    result = {
        "sets": sections,
        "speed": {"device": device, "torch_threads": torch.get_num_threads(),
                  "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None},
        "mrstft_definition": "spectral convergence + log-magnitude L1, each averaged over "
                             f"(n_fft, hop, win) {list(RESOLUTIONS)}",
        # The first set's table at the top, as evaluation.findings reads it.
        "notes": sections["test"]["notes"], "summary": sections["test"]["summary"],
    }
    result["goals"] = goals(result)
    write_json(out / "results.json", result)
    write_text(out / "results.md", markdown_table(result))
    write_text(out / "index.html", listening_page(sections, [n for n, _ in built]))
    return result


# -- the issue's goals -----------------------------------------------------------------------
def new_vocoder(names: list[str]) -> str | None:
    """The vocoder the goals judge: the shipped note vocoder, else the first checkpoint."""
    return "notes" if "notes" in names else next((n for n in names if n.startswith("checkpoint")), None)


def _status(checks: list[bool | None], needed: int) -> str:
    """'not met' when a measured check fails, 'met' when all `needed` were measured and pass."""
    measured = [c for c in checks if c is not None]
    if not all(measured):
        return "not met"
    return "met" if len(measured) >= needed else "not measured"


def goals(result: dict) -> list[dict]:
    """Issue #13's goals for the new vocoder, each {goal, status (met / not met / not measured), detail}."""
    sets = result["sets"]
    names = list(next(iter(sets.values()))["summary"])
    new = new_vocoder(names)
    texts = [
        f"mel L1 at least {GOAL_GAIN_OVER_GRIFFIN_LIM:.0%} below Griffin-Lim on both sets",
        f"MR-STFT distance at least {GOAL_GAIN_OVER_GRIFFIN_LIM:.0%} below Griffin-Lim on both sets",
        "less energy between harmonics than the universal vocoder on both sets",
        f"median pitch error within {PITCH_TOLERANCE_CENTS:g} cents on both sets",
        f"at least {GOAL_X_REAL_TIME:g}x real time on 2 CPU cores",
    ]
    if new is None:
        return [{"goal": t, "vocoder": None, "status": "not measured",
                 "detail": "no new vocoder: ship hifigan/weights or pass --checkpoint"} for t in texts]
    out = []
    for metric, text in (("mel_l1", texts[0]), ("mrstft", texts[1])):
        checks, parts = [], []
        for key, sec in sets.items():
            a, b = sec["summary"][new].get(metric), sec["summary"].get("griffin-lim", {}).get(metric)
            if a is None or not b:
                checks.append(None)
                continue
            gain = 1 - a / b
            checks.append(gain >= GOAL_GAIN_OVER_GRIFFIN_LIM)
            parts.append(f"{key}: {a:.3f} vs {b:.3f} ({gain:+.0%})")
        out.append({"goal": text, "vocoder": new, "status": _status(checks, 2), "detail": "; ".join(parts)})
    checks, parts = [], []
    for key, sec in sets.items():
        a = sec["summary"][new].get("between_harmonics_db")
        b = sec["summary"].get("universal", {}).get("between_harmonics_db")
        checks.append(None if a is None or b is None else a < b)
        if a is not None and b is not None:
            parts.append(f"{key}: {a:.1f} vs {b:.1f} dB")
    out.append({"goal": texts[2], "vocoder": new, "status": _status(checks, 2), "detail": "; ".join(parts)})
    checks, parts = [], []
    for key, sec in sets.items():
        s, o = sec["summary"][new], sec["original"]
        med = s.get("pitch_error_cents_median")
        checks.append(None if med is None else med <= PITCH_TOLERANCE_CENTS)
        if med is not None:
            share = s.get("pitch_within_10_cents")
            parts.append(f"{key}: median {med:.1f} cents, {_fmt(share, '.0%')} of notes within (original "
                         f"{_fmt(o.get('pitch_error_cents_median'), '.1f')})")
    out.append({"goal": texts[3], "vocoder": new, "status": _status(checks, 2), "detail": "; ".join(parts)})
    audio_s = sum(sec["summary"][new]["audio_seconds"] for sec in sets.values())
    wall_s = sum(sec["summary"][new]["vocode_seconds"] for sec in sets.values())
    speed = result["speed"]
    xrt = audio_s / wall_s if wall_s > 0 else None
    on_cpu = speed["device"] == "cpu"
    load = speed.get("load_average")
    out.append({"goal": texts[4], "vocoder": new,
                "status": _status([None if xrt is None or not on_cpu else xrt >= GOAL_X_REAL_TIME], 1),
                "detail": f"{_fmt(xrt, '.1f')}x on {speed['device']} with {speed['torch_threads']} torch "
                          f"thread(s)" + (f", load average {load[0]:.1f}" if load else "")})
    return out


# -- output ----------------------------------------------------------------------------------
def _fmt(x: float | None, spec: str) -> str:
    return "" if x is None else format(x, spec)


def _row(name: str, s: dict, speed: bool = True) -> str:
    cells = [name, _fmt(s.get("mel_l1"), ".3f"), _fmt(s.get("spectral_convergence"), ".3f"),
             _fmt(s.get("log_mag_l1"), ".3f"), _fmt(s.get("mrstft"), ".3f"), _fmt(s.get("between_harmonics_db"), ".1f"),
             _fmt(s.get("pitch_error_cents_median"), ".1f"), _fmt(s.get("pitch_within_10_cents"), ".0%"),
             _fmt(s.get("x_real_time"), ".1f") if speed else "-"]
    return "| " + " | ".join(cells) + " |"


def markdown_table(result: dict) -> str:
    """One table per set, what each vocoder is, and the goals block."""
    speed = result["speed"]
    lines = []
    for key, sec in result["sets"].items():
        lines += [
            f"### {sec.get('title', key)}: {sec['mel_dir']} ({', '.join(sec['splits'])}), {sec['notes']} notes",
            "",
            "| vocoder | mel L1 | spectral convergence | log-mag L1 | MR-STFT | between-harmonics dB | "
            "pitch error cents (median) | within 10 cents | x real time |",
            "|---|---|---|---|---|---|---|---|---|",
            _row("original", sec["original"], speed=False),
            *(_row(n, s) for n, s in sec["summary"].items()),
            "",
        ]
    first = next(iter(result["sets"].values()), {"summary": {}})
    lines += [
        "mel L1: re-analysed audio vs the stored mel. MR-STFT = spectral convergence + log-mag L1 to the "
        "original at 16 kHz, each averaged over (n_fft, hop, win) " + ", ".join("/".join(map(str, r)) for r in RESOLUTIONS)
        + ". Pitch: f0 of the sustained part against the nominal MIDI pitch; 'within 10 cents' is the share "
        "of the notes whose original has a measurable f0. x real time: audio s / vocoder wall s on "
        f"{speed['device']}, {speed['torch_threads']} torch thread(s)"
        + (f", load average {speed['load_average'][0]:.1f}" if speed.get("load_average") else "") + ".",
        "",
        "Vocoders: " + "; ".join(f"{n} = {s['vocoder']}" for n, s in first["summary"].items()),
        "",
        "Goals (issue #13):",
        "",
        *(f"- {g['status']}: {g['goal']}" + (f" ({g['vocoder']}: {g['detail']})" if g["vocoder"] else
                                              f" ({g['detail']})") for g in result.get("goals", [])),
    ]
    return "\n".join(lines) + "\n"


def listening_page(sets: dict[str, dict], names: list[str]) -> str:
    """One table per set; audio at <set>/<vocoder>/<id>.wav beside the page."""
    cols = ["original", *names]
    head = "".join(f"<th>{html.escape(c)}</th>" for c in cols)
    parts = []
    for key, sec in sets.items():
        body = []
        for r in sec["per_note"]:
            cells = "".join(
                f'<td><audio controls preload="none" '
                f'src="{html.escape(key)}/{html.escape(c)}/{html.escape(r["id"])}.wav"></audio></td>'
                for c in cols
            )
            body.append(f"<tr><td>{html.escape(r['id'])}</td>{cells}</tr>")
        parts.append(f"<h2>{html.escape(sec.get('title', key))}: {html.escape(str(sec.get('mel_dir', '')))}</h2>"
                     f"<table border=1><tr><th>note</th>{head}</tr>{''.join(body)}</table>")
    return ("<!doctype html><meta charset='utf-8'><title>copy synthesis</title>"
            "<h1>Copy synthesis: original vs vocoders</h1>" + "".join(parts) + "\n")
