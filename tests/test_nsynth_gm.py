import json
import re

import numpy as np
import pytest
import soundfile as sf

from datasets import nsynth_gm as gm
from datasets.nsynth import FIELDS


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
        assert lo <= n.pitch <= hi
    assert all(gm.GM_MAP[p] is None for p in range(120, 128))
    with pytest.raises(SystemExit) as exc:
        gm.main(["--out", str(tmp_path), "--size", "huge"])
    assert exc.value.code == 2
