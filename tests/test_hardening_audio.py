"""Bad and unusual audio into prep_mels: rejected with a reason, or accepted and converted right.

A folder run records every file it cannot use in rejected.jsonl and goes on; --strict turns
any rejection into a one-line error (exit 2) that leaves the existing mel set intact.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from hardening_fixtures import (
    assert_intact,
    assert_user_error,
    run_script,
    snapshot,
    temp_files,
    tone,
    write_wav,
)

from hifigan.meldataset import audio_to_mel
from melcore.mel_config import MelConfig

CONFIG = MelConfig.from_preset("16k")
PREP = ["--workers", "1", "--preset", "16k", "--window_s", "1", "--quiet"]


# -- the files ---------------------------------------------------------------------------------
def _nonfinite(value: float) -> np.ndarray:
    y = tone(16000)
    y[4000:4010] = value
    return y


# name -> (writer, needle the rejection reason must contain)
def _truncated_data(p: Path) -> None:
    write_wav(p, tone(16000), 16000)
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 2])


def _truncated_header(p: Path) -> None:
    write_wav(p, tone(16000), 16000)
    p.write_bytes(p.read_bytes()[:30])


BAD = {
    "zero_bytes.wav": (lambda p: p.write_bytes(b""), "empty"),
    "no_frames.wav": (lambda p: write_wav(p, np.zeros(0, np.float32), 16000), "empty"),
    "truncated_header.wav": (_truncated_header, "not readable"),
    "truncated_data.wav": (_truncated_data, "truncated"),
    "text.wav": (lambda p: p.write_bytes(b"this is not audio at all, just text\n" * 40), "not readable"),
    "nan.wav": (lambda p: write_wav(p, _nonfinite(np.nan), 16000, "FLOAT"), "nan"),
    "inf.wav": (lambda p: write_wav(p, _nonfinite(np.inf), 16000, "FLOAT"), "inf"),
    "silent.wav": (lambda p: write_wav(p, np.zeros(16000, np.float32), 16000), "silent"),
    "too_short.wav": (lambda p: write_wav(p, tone(16000)[:200], 16000), "short"),
    "two_samples.wav": (lambda p: write_wav(p, tone(16000)[:2], 16000), "short"),
}

# name -> (writer, log-mel tolerance on the loud bins vs the 16 kHz float reference; 8-bit
# quantisation noise and resampling set the looser ones)
GOOD = {
    "ref_pcm16.wav": (lambda p: write_wav(p, tone(16000), 16000, "PCM_16"), 1e-3),
    "pcm_u8.wav": (lambda p: write_wav(p, tone(16000), 16000, "PCM_U8"), 0.02),
    "pcm24.wav": (lambda p: write_wav(p, tone(16000), 16000, "PCM_24"), 1e-4),
    "float32.wav": (lambda p: write_wav(p, tone(16000), 16000, "FLOAT"), 1e-5),
    "float64.wav": (lambda p: write_wav(p, tone(16000), 16000, "DOUBLE"), 1e-5),
    # Mono is the channel mean; peak normalisation then removes the level difference.
    "stereo.wav": (lambda p: write_wav(p, np.stack([tone(16000), 0.5 * tone(16000)], 1), 16000), 1e-3),
    "rate44k.wav": (lambda p: write_wav(p, tone(44100), 44100, "PCM_16"), 1e-3),
    "rate48k.wav": (lambda p: write_wav(p, tone(48000), 48000, "PCM_24"), 1e-3),
}


def make_files(folder: Path, names) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        (BAD.get(name) or GOOD.get(name))[0](folder / name)
    return folder


def manifest(out: Path) -> dict[str, dict]:
    lines = (out / "manifest.jsonl").read_text().splitlines()
    return {e["source"]: e for e in map(json.loads, lines)}


def rejected(out: Path) -> dict[str, str]:
    lines = (out / "rejected.jsonl").read_text().splitlines()
    return {r["file"]: r["reason"] for r in map(json.loads, lines)}


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    """One real prep_mels process over every good and bad file (without --strict)."""
    base = tmp_path_factory.mktemp("audio")
    src = make_files(base / "in", [*GOOD, *BAD])
    out = base / "mels"
    r = run_script("prep_mels.py", "--input", src, "--output", out, *PREP, subprocess_=True)
    return r, src, out


def test_folder_run_survives_every_bad_file(prepared):
    r, _, out = prepared
    assert r.code == 0, r.err
    assert "Traceback" not in r.err
    assert not temp_files(out)
    assert sorted(manifest(out)) == sorted(GOOD)


@pytest.mark.parametrize("name", sorted(BAD))
def test_bad_file_rejected_with_reason(prepared, name):
    _, _, out = prepared
    reasons = rejected(out)
    assert name in reasons, f"{name} not in rejected.jsonl: {reasons}"
    reason = reasons[name]
    assert BAD[name][1] in reason.lower(), f"{name}: reason {reason!r} does not say {BAD[name][1]!r}"
    # A reason is one readable line, not an exception dump.
    assert "\n" not in reason and "Traceback" not in reason
    assert not any(e["source"] == name for e in manifest(out).values())


@pytest.mark.parametrize("name", sorted(GOOD))
def test_formats_and_rates_converted_like_the_reference(prepared, name):
    """8/16/24-bit, float, stereo, 44.1/48 kHz: the mel equals the mel of the same signal
    made at 16 kHz in float (loud bins, away from the edges where resamplers differ)."""
    _, _, out = prepared
    entry = manifest(out)[name]
    mel = np.load(out / entry["split"] / f"{entry['id']}.npy")
    ref = audio_to_mel(tone(16000), CONFIG)
    assert mel.dtype == np.float32 and mel.shape == ref.shape
    inner = (slice(None), slice(2, -2))
    loud = ref[inner] > ref.max() - 5.0  # within ~43 dB of the peak
    assert loud.sum() > 100
    err = np.abs(mel[inner] - ref[inner])[loud]
    assert err.max() < GOOD[name][1], f"{name}: max log-mel error {err.max():.3f}"


# -- --strict: one line, nothing lost ---------------------------------------------------------
@pytest.fixture(scope="module")
def good_set(tmp_path_factory):
    base = tmp_path_factory.mktemp("strict")
    src = make_files(base / "in", ["ref_pcm16.wav", "stereo.wav"])
    out = base / "mels"
    r = run_script("prep_mels.py", "--input", src, "--output", out, *PREP)
    assert r.code == 0, r.err
    return src, out


def clone_set(good_set, tmp_path: Path) -> tuple[Path, Path]:
    """A copy of the good input and of its mel set, as if the set had been made from the copy
    (stats.json records the input folder)."""
    src0, out0 = good_set
    src, out = tmp_path / "in", tmp_path / "mels"
    shutil.copytree(src0, src)
    shutil.copytree(out0, out)
    stats = json.loads((out / "stats.json").read_text())
    if "source_root" in stats:
        stats["source_root"] = str(src.resolve())
        (out / "stats.json").write_text(json.dumps(stats, indent=2, sort_keys=True) + "\n")
    return src, out


@pytest.mark.parametrize("name", sorted(BAD))
def test_strict_names_the_file_and_keeps_the_set(good_set, tmp_path, name):
    src, out = clone_set(good_set, tmp_path)
    make_files(src, [name])
    before = snapshot(out)
    r = run_script("prep_mels.py", "--input", src, "--output", out, "--strict", *PREP)
    assert_user_error(r, name, "--strict")
    assert r.code == 2
    # rejected.jsonl is the report of this run; every mel, the manifest and stats stay.
    assert_intact(before, out, may_change=("rejected.jsonl",))
    assert name in rejected(out)


def test_strict_in_a_real_process(good_set, tmp_path):
    src, out = clone_set(good_set, tmp_path)
    make_files(src, ["text.wav"])
    before = snapshot(out)
    r = run_script("prep_mels.py", "--input", src, "--output", out, "--strict", *PREP, subprocess_=True)
    assert_user_error(r, "text.wav")
    assert r.code == 2
    assert_intact(before, out, may_change=("rejected.jsonl",))


# -- long files are streamed ------------------------------------------------------------------
def test_long_file_is_read_in_blocks(tmp_path, monkeypatch):
    """A 40 s file with 4 s windows: no read asks for more than one window of frames, the
    whole-file readers are never used, and each window's mel is that of its own samples."""
    from datasets.prep import Options, prepare

    sr, seconds, window = 16000, 40, 4
    rng = np.random.default_rng(0)
    y = (0.3 * tone(sr, seconds) * (1 + 0.5 * np.sin(np.arange(sr * seconds) / sr))).astype(np.float32)
    y += 0.01 * rng.standard_normal(y.size).astype(np.float32)
    write_wav(tmp_path / "in" / "long.wav", y, sr, "FLOAT")

    limit = window * sr
    reads = []
    orig_read = sf.SoundFile.read

    def guarded_read(self, frames=-1, *args, **kwargs):
        assert 0 <= frames <= limit, f"read of {frames} frames (limit {limit})"
        reads.append(frames)
        return orig_read(self, frames, *args, **kwargs)

    def forbidden(*_a, **_k):
        raise AssertionError("a long file must not be loaded whole")

    import librosa

    monkeypatch.setattr(sf.SoundFile, "read", guarded_read)
    monkeypatch.setattr(sf, "read", forbidden)
    monkeypatch.setattr(librosa, "load", forbidden)
    out = tmp_path / "mels"
    s = prepare(tmp_path / "in", out, CONFIG, workers=1, options=Options(window_s=window),
                progress=False)
    assert s["clips"] == seconds // window and s["rejected"] == 0
    assert len(reads) == seconds // window
    entries = sorted(manifest_entries(out), key=lambda e: e["start_s"])
    for k in (0, 5, 9):
        e = entries[k]
        mel = np.load(out / e["split"] / f"{e['id']}.npy")
        ref = audio_to_mel(y[k * limit : (k + 1) * limit], CONFIG)
        np.testing.assert_allclose(mel, ref, atol=1e-4)


def manifest_entries(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
