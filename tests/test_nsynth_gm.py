import hashlib
import json
import re

import numpy as np
import pytest
import soundfile as sf

from datasets import nsynth_gm as gm
from datasets.nsynth import FIELDS
from melcore.errors import UserError


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    out = tmp_path_factory.mktemp("gm")
    report = gm.build(out, "tiny", seed=0, workers=1, progress=False)
    return out, report


def load_examples(out):
    return {s: json.loads((out / f"nsynth-gm-{s}" / "examples.json").read_text()) for s in gm.SPLITS}


def test_layout_fields_and_audio(tiny):
    out, report = tiny
    ex = load_examples(out)
    assert sum(len(v) for v in ex.values()) == report["kept"] > 30
    assert report["kept"] + sum(report["rejected"].values()) == report["planned"] == len(gm.plan_notes("tiny"))
    for split, notes in ex.items():
        wavs = sorted(p.stem for p in (out / f"nsynth-gm-{split}" / "audio").glob("*.wav"))
        assert wavs == sorted(notes)
        for key, rec in notes.items():
            assert set(rec) == set(FIELDS)
            assert rec["note_str"] == key
            assert re.fullmatch(r"[a-z_]+_(acoustic|electronic|synthetic)_\d{3}-\d{3}-\d{3}", key)
            assert key == f"{rec['instrument_str']}-{rec['pitch']:03d}-{rec['velocity']:03d}"
            assert gm.FAMILIES[rec["instrument_family"]] == rec["instrument_family_str"]
            assert gm.SOURCES[rec["instrument_source"]] == rec["instrument_source_str"]
            assert (rec["instrument_family_str"], rec["instrument_source_str"]) == gm.GM_MAP[rec["instrument"]]
            assert len(rec["qualities"]) == 10 and set(rec["qualities"]) <= {0, 1}
            assert rec["qualities_str"] == [q for q, v in zip(gm.QUALITIES, rec["qualities"]) if v]
            assert rec["sample_rate"] == 16000
    info = sf.info(str(next((out / "nsynth-gm-train" / "audio").glob("*.wav"))))
    assert (info.frames, info.samplerate, info.channels, info.subtype) == (64000, 16000, 1, "PCM_16")


def test_split_by_instrument_and_families(tiny):
    out, _ = tiny
    ex = load_examples(out)
    inst = {s: {r["instrument"] for r in ex[s].values()} for s in gm.SPLITS}
    assert all(inst.values())
    assert not (inst["train"] & inst["valid"]) and not (inst["train"] & inst["test"])
    assert not (inst["valid"] & inst["test"])
    fams = {r["instrument_family_str"] for s in gm.SPLITS for r in ex[s].values()}
    assert fams == set(gm.FAMILIES)


def test_rendered_pitch_is_the_midi_pitch(tiny):
    out, _ = tiny
    ex = load_examples(out)
    # The flute's strongest partial is a harmonic of MIDI's 440 * 2^((p - 69) / 12).
    flutes = [(s, k, r) for s in gm.SPLITS for k, r in ex[s].items() if r["instrument"] == 73]
    assert flutes
    for split, key, rec in flutes:
        y, _ = sf.read(str(out / f"nsynth-gm-{split}" / "audio" / f"{key}.wav"))
        seg = y[8000:40000] * np.hanning(32000)
        spec = np.abs(np.fft.rfft(seg))
        ratio = np.argmax(spec) * 16000 / 32000 / (440 * 2 ** ((rec["pitch"] - 69) / 12))
        assert round(ratio) in (1, 2, 3) and abs(ratio - round(ratio)) < 0.03 * round(ratio)
        # Held 3 s, then released: the last 100 ms are far quieter than the held part.
        assert np.sqrt(np.mean(y[-1600:] ** 2)) < 0.1 * np.sqrt(np.mean(y[16000:40000] ** 2))


def test_deterministic_and_resumable(tiny, tmp_path):
    out, report = tiny
    again = gm.build(tmp_path, "tiny", seed=0, workers=2, progress=False)
    assert load_examples(tmp_path) == load_examples(out)
    assert again["kept"] == report["kept"]
    key = sorted(load_examples(out)["train"])[0]
    rel = f"nsynth-gm-train/audio/{key}.wav"
    assert (tmp_path / rel).read_bytes() == (out / rel).read_bytes()
    # Rerun: every complete WAV is reused; a truncated one is rendered again.
    (tmp_path / rel).write_bytes((out / rel).read_bytes()[:5000])
    third = gm.build(tmp_path, "tiny", seed=0, workers=1, progress=False)
    assert third["reused"] == report["kept"] - 1
    assert (tmp_path / rel).read_bytes() == (out / rel).read_bytes()
    assert gm.split_instruments(list(range(40)), 0) != gm.split_instruments(list(range(40)), 1)
    assert gm.split_instruments(list(range(40)), 3) == gm.split_instruments(list(range(40)), 3)


def test_silent_and_clipped_are_dropped(tmp_path):
    assert gm.reject_reason(np.zeros(64000, np.float32)) == "silent"
    assert gm.reject_reason(np.full(64000, 1e-5, np.float32)) == "silent"
    assert gm.reject_reason(np.r_[np.zeros(100), 1.0].astype(np.float32)) == "clipped"
    assert gm.reject_reason(0.5 * np.sin(np.arange(64000) / 10).astype(np.float32)) is None
    # 40 dB more gain clips most notes; they are counted and never written.
    loud = gm.build(tmp_path, "tiny", seed=0, workers=1, gain_db=46.0, progress=False)
    assert loud["rejected"].get("clipped", 0) > loud["planned"] // 2
    ex = load_examples(tmp_path)
    kept = sum(len(v) for v in ex.values())
    assert kept == loud["kept"] == loud["planned"] - sum(loud["rejected"].values())
    assert len(list(tmp_path.glob("nsynth-gm-*/audio/*.wav"))) == kept
    for notes in ex.values():
        for key in notes:
            split = next(s for s in gm.SPLITS if key in ex[s])
            y, _ = sf.read(str(tmp_path / f"nsynth-gm-{split}" / "audio" / f"{key}.wav"))
            assert np.max(np.abs(y)) < 0.9995


def test_plan_sizes_and_cli(tmp_path, capsys):
    full = gm.plan_notes("full")
    small = gm.plan_notes("small")
    assert 2000 <= len(small) <= 3500 < len(full)
    assert len({n.note_str for n in full}) == len(full)
    assert {n.velocity for n in full} == set(gm.VELOCITIES)
    for n in full:
        lo, hi = gm.pitch_range(n.program)
        assert max(lo, gm.LOWEST_PITCH) <= n.pitch <= hi
    assert all(gm.GM_MAP[p] is None for p in range(120, 128))
    with pytest.raises(SystemExit) as exc:
        gm.main(["--out", str(tmp_path), "--size", "huge"])
    assert exc.value.code == 2


def test_pitch_floor(tmp_path, capsys):
    """By default no note lies below the floor, every instrument still plays (each range reaches
    above it), and the small set steps by four from each instrument's floored low end; 0 gives
    back the whole NSynth ranges (the bass family's from MIDI 28)."""
    small = gm.plan_notes("small")
    assert min(n.pitch for n in small) == gm.LOWEST_PITCH == 44
    assert {n.program for n in small} == set(gm.programs())
    bass = sorted({n.pitch for n in small if n.program == 33})  # electric bass, range 28-67
    assert bass == [44, 48, 52, 56, 60, 64]
    whole = gm.plan_notes("small", min_pitch=0)
    assert sorted({n.pitch for n in whole if n.program == 33})[:3] == [28, 32, 36]
    assert len(whole) > len(small)
    assert {n.note_str for n in gm.plan_notes("full")} == {
        n.note_str for n in gm.plan_notes("full", min_pitch=0) if n.pitch >= 44}
    with pytest.raises(UserError, match="--min_pitch 200: must be a MIDI pitch"):
        gm.plan_notes("small", min_pitch=200)
    with pytest.raises(UserError, match="--min_pitch 100: no note of --size tiny is that high"):
        gm.plan_notes("tiny", min_pitch=100)
    with pytest.raises(SystemExit) as exc:
        gm.main(["--out", str(tmp_path), "--min_pitch", "-3"])
    assert exc.value.code != 0
    assert "--min_pitch -3" in capsys.readouterr().err


def sf_copy(tmp_path, name, tail=b""):
    """A copy of the bundled SoundFont under another name, with `tail` appended (a different
    sha256 that tinysoundfont still loads)."""
    path = tmp_path / name
    path.write_bytes(gm.soundfont_path().read_bytes() + tail)
    return path


def run_main(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        gm.main(argv)
    err = capsys.readouterr().err.strip()
    return exc.value.code, err


def test_other_soundfont_is_recorded_and_not_mixed(tiny, tmp_path, capsys):
    out, _ = tiny
    default = json.loads((out / gm.SIDECAR).read_text())
    assert default["soundfont"]["path"] == str(gm.soundfont_path())
    assert (default["size"], default["seed"]) == ("tiny", 0)
    # A renamed copy renders the same plan to the same bytes; the sidecar names the copy.
    copy = sf_copy(tmp_path, "renamed.sf2")
    new = tmp_path / "out"
    gm.main(["--out", str(new), "--size", "tiny", "--workers", "1", "--soundfont", str(copy)])
    assert "renamed.sf2" in capsys.readouterr().out
    assert load_examples(new) == load_examples(out)
    wavs = sorted(p.relative_to(out) for p in out.glob("nsynth-gm-*/audio/*.wav"))
    assert wavs == sorted(p.relative_to(new) for p in new.glob("nsynth-gm-*/audio/*.wav"))
    assert all((new / w).read_bytes() == (out / w).read_bytes() for w in wavs)
    meta = json.loads((new / gm.SIDECAR).read_text())
    data = copy.read_bytes()
    assert meta["soundfont"] == {"path": str(copy.resolve()), "name": "renamed.sf2",
                                 "sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
    assert meta["soundfont"]["sha256"] == default["soundfont"]["sha256"]
    assert (meta["size"], meta["seed"]) == ("tiny", 0)
    # Another SoundFont into the same folder is refused, naming both; nothing changes.
    other = sf_copy(tmp_path, "other.sf2", tail=b"padding")
    before = (new / gm.SIDECAR).read_bytes()
    code, err = run_main(["--out", str(new), "--size", "tiny", "--soundfont", str(other)], capsys)
    assert code == 2 and len(err.splitlines()) == 1
    assert str(copy.resolve()) in err and str(other.resolve()) in err and "--out" in err
    assert (new / gm.SIDECAR).read_bytes() == before


def test_older_render_without_sidecar_counts_as_the_default(tmp_path):
    (tmp_path / "nsynth-gm-train" / "audio").mkdir(parents=True)
    (tmp_path / "nsynth-gm-train" / "audio" / "x.wav").write_bytes(b"")
    gm._check_reuse(tmp_path, gm.soundfont_info(gm.soundfont_path()))
    other = gm.soundfont_info(sf_copy(tmp_path, "other.sf2", tail=b"x"))
    with pytest.raises(gm.UserError, match="TimGM6mb.sf2.*other.sf2"):
        gm._check_reuse(tmp_path, other)


def test_bad_soundfont_is_one_line(tmp_path, capsys):
    bundled = gm.soundfont_path().read_bytes()
    cases = {
        "missing.sf2": None,
        "random.sf2": np.random.default_rng(0).bytes(4096),
        "truncated.sf2": bundled[: len(bundled) // 3],
        "garbage.sf2": b"RIFF" + (1000).to_bytes(4, "little") + b"sfbk" + b"\x00" * 996,
        "empty.sf2": b"",
    }
    for name, data in cases.items():
        path = tmp_path / name
        if data is not None:
            path.write_bytes(data)
        out = tmp_path / f"out-{name}"
        code, err = run_main(["--out", str(out), "--size", "tiny", "--soundfont", str(path)], capsys)
        assert code == 2, name
        assert len(err.splitlines()) == 1 and err.startswith("error: ") and str(path.resolve()) in err, err
        assert not out.exists(), name
    code, err = run_main(["--out", str(tmp_path / "o"), "--soundfont", str(tmp_path)], capsys)
    assert code == 2 and "not a file" in err


def test_program_missing_from_the_soundfont_is_dropped(monkeypatch):
    gm._worker_init(gm.DEFAULT_GAIN_DB, str(gm.soundfont_path()))
    synth, _ = gm._SYNTH

    def no_preset(*args, **kwargs):
        raise RuntimeError("bank/preset does not match any instrument")

    monkeypatch.setattr(synth, "program_select", no_preset)
    note, record, reason, reused = gm._render_job((gm.Note(0, 60, 100), "/nonexistent/x.wav", 0))
    assert (record, reason, reused) == (None, "no preset", False)
