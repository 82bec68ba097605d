import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from datasets import prep
from hifigan.meldataset import audio_to_mel
from melcore.errors import UserError
from melcore.mel_config import MelConfig
from melcore.melset import MelSet

ROOT = Path(__file__).resolve().parents[1]


def load_script():
    spec = importlib.util.spec_from_file_location("prep_mels_script", ROOT / "scripts" / "prep_mels.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def rec(key, inst, pitch, velocity, fam=4, src=0):
    return {"note": 0, "note_str": key, "instrument": inst, "instrument_str": key.split("-")[0],
            "pitch": pitch, "velocity": velocity, "sample_rate": 16000,
            "qualities": [1, 0, 0, 0, 0, 0, 0, 1, 0, 0], "qualities_str": ["bright", "percussive"],
            "instrument_family": fam, "instrument_family_str": "keyboard",
            "instrument_source": src, "instrument_source_str": "acoustic"}


def make_nsynth(root, bad=False, seconds=1.0):
    """Two train notes, one valid, one test (+ corrupt, empty and NaN files when bad)."""
    rng = np.random.default_rng(0)
    layout = {"train": [("keyboard_acoustic_001-060-100", 1, 60), ("keyboard_acoustic_001-064-050", 1, 64)],
              "valid": [("keyboard_acoustic_002-067-100", 2, 67)],
              "test": [("keyboard_acoustic_003-072-127", 3, 72)]}
    n = int(16000 * seconds)
    t = np.arange(n) / 16000
    for split, notes in layout.items():
        d = root / f"nsynth-{split}"
        (d / "audio").mkdir(parents=True)
        ex = {}
        for key, inst, pitch in notes:
            f = 440 * 2 ** ((pitch - 69) / 12)
            y = 0.4 * np.sin(2 * np.pi * f * t) * np.exp(-t) + 0.01 * rng.standard_normal(n)
            sf.write(str(d / "audio" / f"{key}.wav"), y, 16000, subtype="PCM_16")
            ex[key] = rec(key, inst, pitch, int(key[-3:]))
        if bad and split == "train":
            for key, kind in (("keyboard_acoustic_009-060-001", "corrupt"),
                              ("keyboard_acoustic_009-060-002", "empty"),
                              ("keyboard_acoustic_009-060-003", "nan")):
                path = d / "audio" / f"{key}.wav"
                if kind == "corrupt":
                    path.write_bytes(b"RIFF\x00\x00junk" * 50)
                elif kind == "empty":
                    sf.write(str(path), np.zeros(0), 16000)
                else:
                    y = np.sin(t[:4000] * 1000)
                    y[7] = np.nan
                    sf.write(str(path), y, 16000, subtype="FLOAT")
                ex[key] = rec(key, 9, 60, int(key[-3:]))
        (d / "examples.json").write_text(json.dumps(ex))
    return root


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    base = tmp_path_factory.mktemp("prep")
    src = make_nsynth(base / "nsynth", bad=True)
    out = base / "mels"
    summary = prep.prepare(src, out, workers=1, progress=False)
    return src, out, summary


def test_mels_equal_audio_to_mel_of_the_clip(prepared):
    src, out, summary = prepared
    config = MelConfig.load(out)
    assert config == MelConfig.from_preset("universal")
    key = "keyboard_acoustic_001-060-100"
    y, sr = sf.read(str(src / "nsynth-train" / "audio" / f"{key}.wav"), dtype="float32")
    mel = np.load(out / "train" / f"{key}.npy")
    assert mel.dtype == np.float32 and mel.shape == (80, 22050 // 256)
    np.testing.assert_array_equal(mel, audio_to_mel(y, config))
    assert summary["clips"] == 4 and summary["computed"] == 4 and summary["splits"] == {
        "train": 2, "valid": 1, "test": 1}


def test_manifest_and_labels(prepared):
    src, out, _ = prepared
    lines = [json.loads(x) for x in (out / "manifest.jsonl").read_text().splitlines()]
    assert [e["id"] for e in lines] == ["keyboard_acoustic_001-060-100", "keyboard_acoustic_001-064-050",
                                        "keyboard_acoustic_002-067-100", "keyboard_acoustic_003-072-127"]
    e = lines[1]
    assert e["split"] == "train" and e["frames"] == 86
    assert e["source"] == "nsynth-train/audio/keyboard_acoustic_001-064-050.wav"
    assert (src / e["source"]).is_file()
    # the set records where its sources are, so readers find them from any working directory
    assert json.loads((out / "stats.json").read_text())["source_root"] == str(src.resolve())
    melset = MelSet(out, split="train")
    assert melset.source_path(1) == src.resolve() / e["source"]
    assert melset.source_path(1, audio_root=src) == src / e["source"]
    assert (e["pitch"], e["velocity"], e["instrument"], e["instrument_family"], e["instrument_source"]) == (
        64, 50, 1, 4, 0)
    assert e["qualities"] == [1, 0, 0, 0, 0, 0, 0, 1, 0, 0]
    assert [x["split"] for x in lines] == ["train", "train", "valid", "test"]


def test_stats_numbers(prepared):
    _, out, _ = prepared
    stats = json.loads((out / "stats.json").read_text())
    mels = [np.load(p) for p in sorted(out.glob("*/*.npy"))]
    allm = np.concatenate(mels, axis=1).astype(np.float64)
    assert stats["clips"] == 4 and stats["frames"] == allm.shape[1]
    assert stats["min"] == pytest.approx(allm.min()) and stats["max"] == pytest.approx(allm.max())
    assert stats["mean"] == pytest.approx(allm.mean(), rel=1e-9)
    assert stats["std"] == pytest.approx(allm.std(), rel=1e-6)
    np.testing.assert_allclose(stats["per_bin"]["mean"], allm.mean(axis=1), rtol=1e-9)
    np.testing.assert_allclose(stats["per_bin"]["std"], allm.std(axis=1), rtol=1e-5, atol=1e-9)
    np.testing.assert_allclose(stats["per_bin"]["min"], allm.min(axis=1))
    outside = ((allm < -12) | (allm > 3)).mean()
    assert stats["share_outside"] == pytest.approx(outside)
    assert stats["share_above_mel_max"] == pytest.approx((allm > 3).mean())
    assert stats["splits"]["train"]["clips"] == 2
    train = np.concatenate([np.load(p) for p in sorted((out / "train").glob("*.npy"))], axis=1)
    assert stats["splits"]["train"]["mean"] == pytest.approx(train.astype(np.float64).mean())


def test_bad_files_are_rejected_with_reasons(prepared):
    _, out, summary = prepared
    rejected = [json.loads(x) for x in (out / "rejected.jsonl").read_text().splitlines()]
    reasons = {Path(r["file"]).stem[-3:]: r["reason"] for r in rejected}
    assert set(reasons) == {"001", "002", "003"} and summary["rejected"] == 3
    assert "not readable audio" in reasons["001"]
    assert "empty" in reasons["002"]
    assert "NaN" in reasons["003"]
    assert not list(out.glob("*/keyboard_acoustic_009*"))


def test_strict_exit_code_and_missing_input(prepared, tmp_path, capsys):
    src, _, _ = prepared
    script = load_script()
    with pytest.raises(SystemExit) as exc:
        script.main(["--input", str(src), "--output", str(tmp_path / "m"), "--strict", "--workers", "1", "--quiet"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --strict: 3 input file(s) rejected") and err.count("\n") == 1
    with pytest.raises(SystemExit) as exc:
        script.main(["--input", str(tmp_path / "nope"), "--output", str(tmp_path / "m2")])
    assert exc.value.code == 2
    assert "nope: folder does not exist" in capsys.readouterr().err


def test_resume_skips_finished_and_redoes_truncated(tmp_path):
    src = make_nsynth(tmp_path / "nsynth")
    out = tmp_path / "mels"
    first = prep.prepare(src, out, workers=2, progress=False)
    assert first["computed"] == 4
    key = out / "valid" / "keyboard_acoustic_002-067-100.npy"
    good = key.read_bytes()
    key.write_bytes(good[: len(good) // 2])  # a half-written file from a killed run
    keep = out / "train" / "keyboard_acoustic_001-060-100.npy"
    mtime = keep.stat().st_mtime_ns
    second = prep.prepare(src, out, workers=1, progress=False)
    assert (second["computed"], second["skipped"]) == (1, 3)
    assert key.read_bytes() == good and keep.stat().st_mtime_ns == mtime
    assert (out / "manifest.jsonl").read_text().count("\n") == 4


def test_config_mismatch_is_an_error_and_keeps_the_set(tmp_path):
    src = make_nsynth(tmp_path / "nsynth")
    out = tmp_path / "mels"
    prep.prepare(src, out, progress=False)
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    with pytest.raises(UserError, match="sampling_rate: 22050 vs 16000"):
        prep.prepare(src, out, config=prep.make_config("16k"), progress=False)
    with pytest.raises(UserError, match="peak_normalize: 0.95 vs None"):
        prep.prepare(src, out, config=prep.make_config("universal", peak_normalize=False), progress=False)
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before


def test_no_peak_normalize_and_16k_preset(tmp_path):
    src = make_nsynth(tmp_path / "nsynth")
    script = load_script()
    script.main(["--input", str(src / "nsynth-test"), "--output", str(tmp_path / "m"), "--preset", "16k",
                 "--no_peak_normalize", "--workers", "1", "--quiet"])
    config = MelConfig.load(tmp_path / "m")
    assert config.peak_normalize is None and config.sampling_rate == 16000
    y, _ = sf.read(str(src / "nsynth-test" / "audio" / "keyboard_acoustic_003-072-127.wav"), dtype="float32")
    mel = np.load(tmp_path / "m" / "test" / "keyboard_acoustic_003-072-127.npy")
    assert mel.shape == (80, 16000 // 256)
    np.testing.assert_array_equal(mel, audio_to_mel(y, config))


@pytest.mark.parametrize("dtype,tol", [("float32", 0.0), ("float16", 0.01)])
def test_pack_layout_equals_per_file_layout(tmp_path, dtype, tol):
    src = make_nsynth(tmp_path / "nsynth")
    out = tmp_path / "mels"
    prep.prepare(src, out, pack=True, pack_dtype=dtype, progress=False)
    index = json.loads((out / "packed" / "train.index.json").read_text())
    assert index["ids"] == ["keyboard_acoustic_001-060-100", "keyboard_acoustic_001-064-050"]
    assert index["offsets"] == [0, 86] and index["frames"] == [86, 86]
    arr = np.load(out / "packed" / "train.npy", mmap_mode="r")
    assert arr.shape == (80, 172) and arr.dtype == np.dtype(dtype)
    packed, files = MelSet(out), MelSet(out, prefer_packed=False)
    assert packed.layout == "packed" and files.layout == "files"
    for i in range(len(files)):
        a, b = packed.load(i), files.load(i)
        assert a.dtype == np.float32 and a.shape == b.shape
        assert np.max(np.abs(a - b)) <= tol


def test_audio_folder_input(tmp_path):
    d = tmp_path / "audio"
    d.mkdir()
    t = np.arange(9 * 22050) / 22050
    sf.write(str(d / "long.wav"), 0.3 * np.sin(2 * np.pi * 330 * t), 22050)
    sf.write(str(d / "quiet.wav"), np.zeros(16000), 16000)
    out = tmp_path / "mels"
    r = prep.prepare(d, out, progress=False)
    assert r["mode"] == "folder" and r["clips"] == 2 and r["rejected"] == 1
    lines = [json.loads(x) for x in (out / "manifest.jsonl").read_text().splitlines()]
    assert [x["id"] for x in lines] == ["long_wav-w00000", "long_wav-w00001"]
    assert [x["start_s"] for x in lines] == [0.0, 4.0] and all(x["frames"] == 344 for x in lines)
    assert "silent" in (out / "rejected.jsonl").read_text()


def _tone_and_noise(d):
    """A 4 s harmonic note (onset, decay) and 4 s of white noise, at 16 kHz."""
    d.mkdir()
    t = np.arange(4 * 16000) / 16000
    tone = sum(np.sin(2 * np.pi * 220 * k * t) / k for k in range(1, 8)) * np.exp(-t) * 0.2
    sf.write(str(d / "note.wav"), tone, 16000)
    sf.write(str(d / "noise.wav"), 0.2 * np.random.default_rng(0).standard_normal(t.size), 16000)
    return d


def test_curation_drops_shallow_clips_and_reruns_follow_the_threshold(tmp_path):
    from datasets.curation import partial_depth

    src = _tone_and_noise(tmp_path / "audio")
    out = tmp_path / "mels"
    curate = prep.Options(min_partial_depth=0.35)
    r = prep.prepare(src, out, options=curate, strict=True, progress=False)  # curation is not an error
    assert (r["clips"], r["curated"], r["rejected"]) == (1, 1, 0)
    assert [json.loads(x)["id"] for x in (out / "manifest.jsonl").read_text().splitlines()] == ["note_wav-w00000"]
    (cut,) = [json.loads(x) for x in (out / "curated.jsonl").read_text().splitlines()]
    assert cut["id"] == "noise_wav-w00000" and cut["source"] == "noise.wav" and cut["partial_depth"] < 0.35
    (kept,) = out.rglob("note_wav-w00000.npy")
    assert partial_depth(np.load(kept)) >= 0.35
    assert not list(out.rglob("noise_wav-w00000.npy"))

    # Off (the default): the noise comes back; on again: its .npy goes and the manifest follows.
    assert prep.prepare(src, out, progress=False)["clips"] == 2
    assert len(list(out.rglob("noise_wav-w00000.npy"))) == 1
    again = prep.prepare(src, out, options=curate, progress=False)
    assert (again["clips"], again["curated"]) == (1, 1)
    assert not list(out.rglob("noise_wav-w00000.npy"))
    assert (out / "curated.jsonl").read_text().count("\n") == 1


def test_curation_flag(tmp_path, capsys):
    src = _tone_and_noise(tmp_path / "audio")
    script = load_script()
    script.main(["--input", str(src), "--output", str(tmp_path / "m"), "--workers", "1", "--quiet",
                 "--min_partial_depth", "0.35"])
    assert "0 rejected, 1 curated out" in capsys.readouterr().out
    assert (tmp_path / "m" / "curated.jsonl").read_text().count("\n") == 1
    with pytest.raises(SystemExit) as exc:
        script.main(["--input", str(src), "--output", str(tmp_path / "m2"), "--min_partial_depth", "-1"])
    assert exc.value.code == 2
    assert "--min_partial_depth -1.0: must be 0 (off) or a positive depth" in capsys.readouterr().err
