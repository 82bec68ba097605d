"""NSynth-GM: the embedded default data set, NSynth-style single notes rendered from General MIDI.

The General MIDI SoundFont that ships inside pretty_midi (`TimGM6mb.sf2`) is played with
tinysoundfont: one note per file, 3 s held + 1 s release = 4 s at 16 kHz mono, 16-bit WAV
(64,000 samples), written in NSynth's jsonwav layout so every later step treats it like NSynth:

    OUT/nsynth-gm-{train,valid,test}/examples.json
    OUT/nsynth-gm-{train,valid,test}/audio/<note_str>.wav

Each instrument plays its NSynth family's pitch range from MIDI 44 up (`--min_pitch`; lower notes'
partials are closer than the default mel preset's bins). Splits are by instrument (as NSynth
does). Renders that are silent or clipped are dropped and counted. A rerun skips WAVs that are
already complete; examples.json is written last.

`--soundfont PATH` renders the same note plan from any other General MIDI SoundFont (for
zero-shot evaluation on instruments a model never heard). `OUT/nsynth_gm.json` records which
SoundFont made the set (path, name, sha256, bytes) with the size and seed; a rerun into a folder
rendered from a different SoundFont is refused rather than mixing the two.

    python -m datasets.nsynth_gm --out data/nsynth-gm --size small --workers 2
    python -m datasets.nsynth_gm --out data/nsynth-fluid --soundfont /usr/share/sounds/sf2/FluidR3_GM.sf2
"""

from __future__ import annotations

import argparse
import hashlib
import json
import multiprocessing as mp
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from melcore.atomic import write_json
from melcore.errors import UserError, cli_main, one_line

SAMPLE_RATE = 16000
HOLD_SECONDS = 3
RELEASE_SECONDS = 1
NUM_SAMPLES = SAMPLE_RATE * (HOLD_SECONDS + RELEASE_SECONDS)
VELOCITIES = (25, 50, 75, 100, 127)
SPLITS = ("train", "valid", "test")
SIZES = ("tiny", "small", "full")

# NSynth's label vocabularies, in NSynth's index order.
FAMILIES = (
    "bass", "brass", "flute", "guitar", "keyboard", "mallet",
    "organ", "reed", "string", "synth_lead", "vocal",
)
SOURCES = ("acoustic", "electronic", "synthetic")
QUALITIES = (
    "bright", "dark", "distortion", "fast_decay", "long_release",
    "multiphonic", "nonlinear_env", "percussive", "reverb", "tempo-synced",
)

# A render counts as silent below this peak (about -80 dBFS) and clipped at full scale.
SILENT_PEAK = 1e-4
CLIP_PEAK = 0.999
# TimGM6mb through tinysoundfont peaks at a median of about -15 dBFS; +3 dB lifts it towards
# NSynth's levels while about 1% of notes (the loudest presets at velocity 100+) clip and are
# dropped (+6 dB would drop 3%).
DEFAULT_GAIN_DB = 3.0
# The lowest pitch rendered by default: MIDI 44 (G#2, 104 Hz). Below 1 kHz the universal mel
# preset's 80 bins are 37 Hz apart, so a lower note's partials lie under three bins apart and its
# mel is a wash with no gap between them, which no model of this representation can draw as a
# note with partials. On the full-range `small` set, 62% of the notes at pitch 40 have partial
# depth under 0.35 nats, 5% at 44, 1-2% from 48 up (docs/RECIPE.md, "The pitch floor").
# `--min_pitch 0` renders each instrument's whole NSynth range.
LOWEST_PITCH = 44

# General MIDI program -> (family, source), None for programs with no NSynth family (unpitched
# percussion and sound effects). Written per GM block of eight.
_A, _E, _S = "acoustic", "electronic", "synthetic"
GM_MAP: list[tuple[str, str] | None] = [
    # 0-7 piano
    ("keyboard", _A), ("keyboard", _A), ("keyboard", _E), ("keyboard", _A),
    ("keyboard", _E), ("keyboard", _E), ("keyboard", _A), ("keyboard", _E),
    # 8-15 chromatic percussion
    ("keyboard", _A), ("mallet", _A), ("mallet", _A), ("mallet", _A),
    ("mallet", _A), ("mallet", _A), ("mallet", _A), ("mallet", _A),
    # 16-23 organ (harmonica is a free reed)
    ("organ", _E), ("organ", _E), ("organ", _E), ("organ", _A),
    ("organ", _A), ("organ", _A), ("reed", _A), ("organ", _A),
    # 24-31 guitar
    ("guitar", _A), ("guitar", _A), ("guitar", _E), ("guitar", _E),
    ("guitar", _E), ("guitar", _E), ("guitar", _E), ("guitar", _E),
    # 32-39 bass
    ("bass", _A), ("bass", _E), ("bass", _E), ("bass", _E),
    ("bass", _E), ("bass", _E), ("bass", _S), ("bass", _S),
    # 40-47 strings (harp is plucked strings; timpani is struck)
    ("string", _A), ("string", _A), ("string", _A), ("string", _A),
    ("string", _A), ("string", _A), ("string", _A), ("mallet", _A),
    # 48-55 ensemble
    ("string", _A), ("string", _A), ("string", _S), ("string", _S),
    ("vocal", _A), ("vocal", _A), ("vocal", _S), ("brass", _S),
    # 56-63 brass
    ("brass", _A), ("brass", _A), ("brass", _A), ("brass", _A),
    ("brass", _A), ("brass", _A), ("brass", _S), ("brass", _S),
    # 64-71 reed
    ("reed", _A), ("reed", _A), ("reed", _A), ("reed", _A),
    ("reed", _A), ("reed", _A), ("reed", _A), ("reed", _A),
    # 72-79 pipe
    ("flute", _A), ("flute", _A), ("flute", _A), ("flute", _A),
    ("flute", _A), ("flute", _A), ("flute", _A), ("flute", _A),
    # 80-87 synth lead (85 is a voice lead)
    ("synth_lead", _S), ("synth_lead", _S), ("synth_lead", _S), ("synth_lead", _S),
    ("synth_lead", _S), ("vocal", _S), ("synth_lead", _S), ("synth_lead", _S),
    # 88-95 synth pad: NSynth has no pad family; they are sustained synthetic leads
    ("synth_lead", _S), ("synth_lead", _S), ("synth_lead", _S), ("synth_lead", _S),
    ("synth_lead", _S), ("synth_lead", _S), ("synth_lead", _S), ("synth_lead", _S),
    # 96-103 synth effects
    ("synth_lead", _S), ("synth_lead", _S), ("synth_lead", _S), ("synth_lead", _S),
    ("synth_lead", _S), ("synth_lead", _S), ("synth_lead", _S), ("synth_lead", _S),
    # 104-111 ethnic
    ("guitar", _A), ("guitar", _A), ("guitar", _A), ("guitar", _A),
    ("mallet", _A), ("reed", _A), ("string", _A), ("reed", _A),
    # 112-119 percussive: only the pitched ones
    ("mallet", _A), ("mallet", _A), ("mallet", _A), None, None, None, None, None,
    # 120-127 sound effects
    None, None, None, None, None, None, None, None,
]
assert len(GM_MAP) == 128

# Playable MIDI range per family (inclusive), with overrides for instruments whose range
# differs a lot from their family's.
FAMILY_RANGE = {
    "bass": (28, 67), "brass": (40, 84), "flute": (60, 96), "guitar": (40, 84),
    "keyboard": (21, 108), "mallet": (48, 96), "organ": (36, 96), "reed": (40, 84),
    "string": (36, 96), "synth_lead": (36, 96), "vocal": (48, 79),
}
PROGRAM_RANGE = {
    8: (60, 108), 9: (79, 108), 10: (60, 96), 14: (60, 77), 40: (55, 100), 41: (48, 88),
    42: (36, 76), 43: (28, 67), 46: (24, 103), 47: (40, 60), 58: (28, 65), 70: (34, 75),
    72: (74, 108), 64: (49, 81), 67: (36, 69),
}


@dataclass(frozen=True)
class Note:
    program: int
    pitch: int
    velocity: int

    @property
    def family(self) -> str:
        return GM_MAP[self.program][0]

    @property
    def source(self) -> str:
        return GM_MAP[self.program][1]

    @property
    def instrument_str(self) -> str:
        # The instrument index is the GM program, so a note's id is the same in every size.
        return f"{self.family}_{self.source}_{self.program:03d}"

    @property
    def note_str(self) -> str:
        return f"{self.instrument_str}-{self.pitch:03d}-{self.velocity:03d}"


SIDECAR = "nsynth_gm.json"


def soundfont_path() -> Path:
    """The default SoundFont: TimGM6mb.sf2, bundled with pretty_midi."""
    import pretty_midi

    path = Path(pretty_midi.__file__).parent / "TimGM6mb.sf2"
    if not path.is_file():
        raise UserError(f"{path}: pretty_midi ships no TimGM6mb.sf2; reinstall pretty_midi")
    return path


def resolve_soundfont(path: str | os.PathLike | None = None) -> Path:
    """The SoundFont to render from (the bundled default when `path` is None), checked.

    A missing file, one that is not a RIFF 'sfbk' file, one shorter than its RIFF header says
    (truncated) or one tinysoundfont cannot load raises a one-line UserError naming the file."""
    if path is None:
        return soundfont_path()
    path = Path(path).expanduser().resolve()
    fix = "give --soundfont a General MIDI SoundFont (.sf2)"
    if not path.exists():
        raise UserError(f"--soundfont {path}: no such file; {fix}")
    if not path.is_file():
        raise UserError(f"--soundfont {path}: not a file; {fix}")
    with open(path, "rb") as f:
        head = f.read(12)
    if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"sfbk":
        raise UserError(f"--soundfont {path}: not a SoundFont (no RIFF 'sfbk' header); {fix}")
    declared = int.from_bytes(head[4:8], "little") + 8
    actual = path.stat().st_size
    if actual < declared:
        raise UserError(f"--soundfont {path}: truncated ({actual} of {declared} bytes); "
                        "copy or download it again")
    import tinysoundfont

    try:
        tinysoundfont.Synth(samplerate=SAMPLE_RATE).sfload(str(path))
    except Exception as exc:  # tinysoundfont raises RuntimeError for a malformed file
        raise UserError(f"--soundfont {path}: tinysoundfont cannot load it ({one_line(exc)}); "
                        f"{fix}") from None
    return path


def soundfont_info(path: Path) -> dict:
    """What identifies a SoundFont: its path, file name, sha256 and size in bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return {"path": str(path), "name": path.name, "sha256": digest.hexdigest(),
            "bytes": path.stat().st_size}


def _check_reuse(out: Path, info: dict) -> None:
    """Refuse to render into a folder whose WAVs came from a different SoundFont.

    Folders rendered before the sidecar existed were all rendered from the bundled default."""
    sidecar = out / SIDECAR
    if sidecar.is_file():
        try:
            previous = json.loads(sidecar.read_text())["soundfont"]
            old_sha, old_name = str(previous["sha256"]), str(previous.get("path") or previous["name"])
        except (ValueError, KeyError, TypeError):
            raise UserError(f"{sidecar}: unreadable record of the SoundFont this folder was "
                            "rendered from; choose another --out") from None
    elif any(out.glob("nsynth-gm-*/audio/*.wav")):
        default = soundfont_path()
        old_sha, old_name = soundfont_info(default)["sha256"], f"{default} (no {SIDECAR}: an older render)"
    else:
        return
    if old_sha != info["sha256"]:
        raise UserError(f"{out}: rendered from the SoundFont {old_name} (sha256 {old_sha[:12]}...), "
                        f"not {info['path']} (sha256 {info['sha256'][:12]}...); its WAVs would be "
                        "reused; choose another --out for this SoundFont")


def programs() -> list[int]:
    """GM programs that map to an NSynth family."""
    return [p for p in range(128) if GM_MAP[p] is not None]


def pitch_range(program: int) -> tuple[int, int]:
    return PROGRAM_RANGE.get(program, FAMILY_RANGE[GM_MAP[program][0]])


def plan_notes(size: str, min_pitch: int = LOWEST_PITCH) -> list[Note]:
    """Every note a size renders, in a fixed order: each instrument's NSynth pitch range, from
    `min_pitch` up (0: the whole range)."""
    if size not in SIZES:
        raise UserError(f"--size {size!r}: unknown; choose one of {SIZES}")
    if not 0 <= min_pitch <= 127:
        raise UserError(f"--min_pitch {min_pitch}: must be a MIDI pitch, 0-127")

    def playable(p: int) -> range:
        lo, hi = pitch_range(p)
        return range(max(lo, min_pitch), hi + 1)

    if size == "tiny":
        # One instrument per family for a quick but label-complete set.
        chosen = [0, 11, 19, 24, 33, 40, 52, 56, 65, 73, 81]
        notes = [Note(p, pitch, v) for p in chosen for pitch in (48, 60, 72) for v in (50, 127)
                 if pitch in playable(p)]
    elif size == "small":
        # Every fourth semitone from the low end, two loudnesses: about 2,700 notes.
        notes = [Note(p, pitch, v) for p in programs() for pitch in playable(p)[::4] for v in (50, 100)]
    else:
        notes = [Note(p, pitch, v) for p in programs() for pitch in playable(p) for v in VELOCITIES]
    if not notes:
        raise UserError(f"--min_pitch {min_pitch}: no note of --size {size} is that high; nothing to render")
    return notes


def split_instruments(program_ids: list[int], seed: int) -> dict[int, str]:
    """Instrument -> split: about 80/10/10 with every split non-empty, deterministic in seed."""
    ids = sorted(set(program_ids))
    order = np.random.default_rng(seed).permutation(len(ids))
    n = len(ids)
    n_valid = max(1, round(0.1 * n)) if n >= 3 else 0
    n_test = max(1, round(0.1 * n)) if n >= 3 else 0
    result = {}
    for rank, i in enumerate(order):
        split = "valid" if rank < n_valid else "test" if rank < n_valid + n_test else "train"
        result[ids[i]] = split
    return result


# -- rendering (one Synth per worker process) ---------------------------------------------
_SYNTH = None


def _worker_init(gain_db: float, soundfont: str) -> None:
    global _SYNTH
    import tinysoundfont

    # Keep each worker single-threaded; parallelism comes from processes.
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    synth = tinysoundfont.Synth(gain=gain_db, samplerate=SAMPLE_RATE)
    sfid = synth.sfload(soundfont)
    _SYNTH = (synth, sfid)


def render_note(note: Note) -> np.ndarray | None:
    """The note's 4 s of float32 mono audio at 16 kHz (needs _worker_init in this process);
    None when the SoundFont has no preset for the note's program (bank 0)."""
    synth, sfid = _SYNTH
    # sounds_off only starts a fast fade; rendering a few samples retires those voices so
    # the note sounds the same whatever was rendered before it (checked against a fresh Synth).
    synth.sounds_off()
    synth.generate(256)
    try:
        synth.program_select(0, sfid, 0, note.program)
    except RuntimeError:  # a SoundFont that is not complete General MIDI
        return None
    synth.noteon(0, note.pitch, note.velocity)
    held = np.frombuffer(synth.generate(HOLD_SECONDS * SAMPLE_RATE), dtype=np.float32)
    synth.noteoff(0, note.pitch)
    tail = np.frombuffer(synth.generate(RELEASE_SECONDS * SAMPLE_RATE), dtype=np.float32)
    stereo = np.concatenate([held, tail]).reshape(-1, 2)
    return stereo.mean(axis=1).astype(np.float32)


def reject_reason(y: np.ndarray) -> str | None:
    """Why a render is unusable ('silent', 'clipped'), or None when it is fine."""
    peak = float(np.max(np.abs(y))) if y.size else 0.0
    if not np.isfinite(peak) or peak < SILENT_PEAK:
        return "silent"
    if peak >= CLIP_PEAK:
        return "clipped"
    return None


def qualities(y: np.ndarray, program: int) -> list[int]:
    """NSynth's 10 note qualities, estimated from the audio and the GM program.

    Heuristics (NSynth's were human labels): bright/dark from the spectral centroid,
    fast_decay when the level 1 s in is 20 dB below the peak, long_release when the
    release keeps half a second of sound, percussive for struck/plucked programs,
    distortion for overdriven guitars. The rest are 0.
    """
    q = dict.fromkeys(QUALITIES, 0)
    # Centroid of the first 1.024 s (a power-of-two FFT: cheap, and the attack decides it).
    seg = y[:16384]
    spec = np.abs(np.fft.rfft(seg))
    freqs = np.fft.rfftfreq(seg.size, 1 / SAMPLE_RATE)
    centroid = float((spec * freqs).sum() / max(spec.sum(), 1e-12))
    q["bright"] = int(centroid > 2500)
    q["dark"] = int(centroid < 600)
    # RMS envelope in 25 ms blocks.
    block = SAMPLE_RATE // 40
    env = np.sqrt((y[: y.size // block * block].reshape(-1, block) ** 2).mean(axis=1) + 1e-12)
    peak = env.max()
    q["fast_decay"] = int(env[min(env.size - 1, 40)] < peak * 0.1)
    release = env[(HOLD_SECONDS * SAMPLE_RATE + SAMPLE_RATE // 2) // block :]
    q["long_release"] = int(release.size > 0 and release.max() > peak * 0.05)
    q["percussive"] = int(0 <= program <= 15 or 24 <= program <= 39 or program in (45, 46, 47)
                          or 104 <= program <= 114)
    q["distortion"] = int(program in (29, 30))
    return [q[name] for name in QUALITIES]


def example_record(note: Note, y: np.ndarray, index: int) -> dict:
    fam, src = note.family, note.source
    q = qualities(y, note.program)
    return {
        "note": index,
        "note_str": note.note_str,
        "instrument": note.program,
        "instrument_str": note.instrument_str,
        "pitch": note.pitch,
        "velocity": note.velocity,
        "sample_rate": SAMPLE_RATE,
        "qualities": q,
        "qualities_str": [name for name, v in zip(QUALITIES, q) if v],
        "instrument_family": FAMILIES.index(fam),
        "instrument_family_str": fam,
        "instrument_source": SOURCES.index(src),
        "instrument_source_str": src,
    }


def _complete_wav(path: Path) -> np.ndarray | None:
    """The audio of an already-finished WAV, None when absent or incomplete."""
    import soundfile as sf

    try:
        info = sf.info(str(path))
        if info.frames != NUM_SAMPLES or info.samplerate != SAMPLE_RATE or info.channels != 1:
            return None
        y, _ = sf.read(str(path), dtype="float32")
        return y
    except Exception:
        return None


def _render_job(job: tuple[Note, str, int]) -> tuple[Note, dict | None, str, bool]:
    """Render (or reuse) one note, write its WAV: (note, NSynth record or None, reason, reused).

    Runs in a worker and returns only the small record, not the audio, to keep IPC cheap.
    """
    from melcore.audio import write_wav

    note, wav_path, index = job
    y = _complete_wav(Path(wav_path))
    if y is not None:
        return note, example_record(note, y, index), "", True
    y = render_note(note)
    reason = "no preset" if y is None else reject_reason(y)
    if reason:
        return note, None, reason, False
    # No fsync: the rename is still atomic and a rerun re-checks every WAV's length.
    write_wav(wav_path, y, SAMPLE_RATE, fsync=False)
    # Labels from the 16-bit audio as stored, so a rerun that reads it back agrees.
    stored = np.round(np.clip(y, -1, 1) * 32767).astype(np.float32) / 32768
    return note, example_record(note, stored, index), "", False


def build(
    out: str | os.PathLike,
    size: str = "small",
    seed: int = 0,
    workers: int = 1,
    gain_db: float = DEFAULT_GAIN_DB,
    progress: bool = True,
    soundfont: str | os.PathLike | None = None,
    min_pitch: int = LOWEST_PITCH,
) -> dict:
    """Render the set under `out` from `soundfont` (None: the bundled TimGM6mb.sf2), pitches from
    `min_pitch` up; returns counts, the rejects by reason, the speed and the SoundFont's identity."""
    from tqdm import tqdm

    out = Path(out)
    notes = plan_notes(size, min_pitch)
    sf_path = resolve_soundfont(soundfont)
    sf_info = soundfont_info(sf_path)
    _check_reuse(out, sf_info)
    split_of = split_instruments([n.program for n in notes], seed)
    jobs = [(n, str(out / f"nsynth-gm-{split_of[n.program]}" / "audio" / f"{n.note_str}.wav"), i)
            for i, n in enumerate(notes)]
    for split in SPLITS:
        (out / f"nsynth-gm-{split}" / "audio").mkdir(parents=True, exist_ok=True)
    # Before any WAV: an interrupted render still says which SoundFont its WAVs came from.
    write_json(out / SIDECAR, {"soundfont": sf_info, "size": size, "seed": seed, "gain_db": gain_db,
                               "min_pitch": min_pitch})

    examples: dict[str, dict] = {s: {} for s in SPLITS}
    rejected: dict[str, int] = {}
    reused = 0
    from datasets.timing import cpu_seconds

    t0, c0 = time.perf_counter(), cpu_seconds()
    workers = max(1, int(workers))
    bar = tqdm(total=len(jobs), desc=f"render nsynth-gm {size}", unit="note", disable=not progress)
    if workers == 1:
        _worker_init(gain_db, str(sf_path))
        results = map(_render_job, jobs)
        pool = None
    else:
        pool = mp.get_context("fork" if sys.platform != "win32" else "spawn").Pool(
            workers, initializer=_worker_init, initargs=(gain_db, str(sf_path)))
        results = pool.imap_unordered(_render_job, jobs, chunksize=16)
    try:
        for note, record, reason, was_reused in results:
            bar.update(1)
            if record is None:
                rejected[reason] = rejected.get(reason, 0) + 1
                continue
            reused += was_reused
            examples[split_of[note.program]][note.note_str] = record
    finally:
        bar.close()
        if pool is not None:
            pool.close()
            pool.join()
    seconds = time.perf_counter() - t0
    cpu = cpu_seconds() - c0  # pool workers are joined, so their CPU time is counted
    # examples.json last: a folder with it is complete.
    for split in SPLITS:
        ordered = dict(sorted(examples[split].items()))
        write_json(out / f"nsynth-gm-{split}" / "examples.json", ordered)
    kept = sum(len(e) for e in examples.values())
    return {
        "planned": len(notes),
        "kept": kept,
        "reused": reused,
        "rejected": rejected,
        "splits": {s: len(examples[s]) for s in SPLITS},
        "instruments": {s: sorted({e["instrument"] for e in examples[s].values()}) for s in SPLITS},
        "seconds": seconds,
        "notes_per_s": len(notes) / seconds if seconds > 0 else float("inf"),
        "cpu_seconds": cpu,
        "notes_per_cpu_s": len(notes) / cpu if cpu > 0 else float("inf"),
        "soundfont": sf_info,
    }


@cli_main
def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True, help="output root (gets nsynth-gm-{train,valid,test})")
    ap.add_argument("--size", choices=SIZES, default="small")
    ap.add_argument("--seed", type=int, default=0, help="seed of the instrument split")
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--gain_db", type=float, default=DEFAULT_GAIN_DB)
    ap.add_argument("--min_pitch", type=int, default=LOWEST_PITCH, metavar="MIDI",
                    help=f"lowest MIDI pitch rendered (default {LOWEST_PITCH}: lower notes' partials are "
                         "closer than the universal mel preset's bins and their mels are washes; 0 "
                         "renders each instrument's whole NSynth range)")
    ap.add_argument("--soundfont", default=None, metavar="PATH",
                    help="General MIDI SoundFont (.sf2) to render from (default: pretty_midi's "
                         "bundled TimGM6mb.sf2)")
    args = ap.parse_args(argv)
    r = build(args.out, args.size, args.seed, args.workers, args.gain_db,
              soundfont=args.soundfont, min_pitch=args.min_pitch)
    sf = r["soundfont"]
    rej = ", ".join(f"{k}: {v}" for k, v in sorted(r["rejected"].items())) or "none"
    print(f"nsynth-gm {args.size} (pitch {args.min_pitch} up): {r['kept']} notes kept of {r['planned']} "
          f"(train {r['splits']['train']}, valid {r['splits']['valid']}, test {r['splits']['test']}; "
          f"{r['reused']} reused), dropped: {rej}; {r['notes_per_s']:.0f} notes/s "
          f"({r['notes_per_cpu_s']:.0f} per CPU-second) in {r['seconds']:.1f} s from the SoundFont "
          f"{sf['name']} (sha256 {sf['sha256'][:12]}...) -> {args.out}")


if __name__ == "__main__":
    main()
