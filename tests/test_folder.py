import numpy as np
import pytest
import soundfile as sf

from datasets import folder
from melcore.audio import resample
from melcore.errors import UserError


def tone(seconds, sr, freq=440.0, amp=0.5):
    t = np.arange(round(seconds * sr)) / sr
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def test_windows_hop_silence_and_stereo_44k(tmp_path):
    sr = 44100
    left = tone(10, sr)
    left[4 * sr : 8 * sr] = 0.0  # 4-8 s silent
    stereo = np.stack([left, np.zeros_like(left)], axis=1)  # mono mix halves the level
    (tmp_path / "sub").mkdir()
    sf.write(str(tmp_path / "sub" / "rec one.flac"), stereo, sr)

    wins = list(folder.iter_clips(tmp_path, window_s=4.0, hop_s=2.0))
    # Starts 0, 2, 4, 6 s; the 4-8 s window is silent and dropped.
    assert [w.index for w in wins] == [0, 1, 3]
    assert [w.start_s for w in wins] == [0.0, 2.0, 6.0]
    assert [w.id for w in wins] == [f"sub__rec_one_flac-w{i:05d}" for i in (0, 1, 3)]
    assert {w.source for w in wins} == {"sub/rec one.flac"}
    assert len({w.split for w in wins}) == 1
    for w in wins:
        assert w.audio.dtype == np.float32 and w.audio.shape == (64000,)
    # Window 0 is the mono mix (0.5 * left) resampled to 16 kHz: amplitude 0.25, 440 Hz.
    expected = resample(0.5 * left[: 4 * sr], sr, 16000)
    assert np.max(np.abs(wins[0].audio[1000:-1000] - expected[1000:-1000])) < 1e-3
    assert abs(np.max(np.abs(wins[0].audio)) - 0.25) < 0.01
    spec = np.abs(np.fft.rfft(wins[0].audio))
    assert abs(np.argmax(spec) * 16000 / 64000 - 440) < 1
    # Window 1 is half tone, half silence.
    assert np.sqrt(np.mean(wins[1].audio[:32000] ** 2)) > 0.1
    assert np.max(np.abs(wins[1].audio[33000:])) < 1e-3


def test_short_file_is_one_clip_and_threshold(tmp_path):
    sf.write(str(tmp_path / "a.wav"), tone(1.0, 16000, amp=0.01), 16000)  # -43 dBFS RMS
    (w,) = folder.iter_clips(tmp_path)
    assert w.audio.shape == (16000,) and w.index == 0
    assert list(folder.iter_clips(tmp_path, min_rms_db=-40)) == []
    assert abs(folder.rms_db(tone(1.0, 16000, amp=0.01)) - 20 * np.log10(0.01 / np.sqrt(2))) < 0.01


def test_split_is_deterministic_by_file():
    names = [f"dir{i % 7}/take_{i}.wav" for i in range(3000)]
    splits = [folder.split_of(n) for n in names]
    assert splits == [folder.split_of(n) for n in names]
    share = {s: splits.count(s) / len(splits) for s in ("train", "valid", "test")}
    assert 0.76 < share["train"] < 0.84 and 0.07 < share["valid"] < 0.13 and 0.07 < share["test"] < 0.13
    # Known values pin the hash (a changed hash would move every file between splits).
    pinned = {"x0.wav": "valid", "x3.wav": "valid", "x29.wav": "test", "x38.wav": "test",
              "x1.wav": "train", "a.wav": "train"}
    assert {n: folder.split_of(n) for n in pinned} == pinned


def test_split_filter_and_listing(tmp_path):
    for i in range(12):
        sf.write(str(tmp_path / f"f{i:02d}.wav"), tone(0.5, 16000, freq=200 + 50 * i), 16000)
    (tmp_path / "notes.txt").write_text("not audio")
    (tmp_path / ".hidden.wav").write_text("skip me")
    assert [p.name for p in folder.list_audio(tmp_path)] == [f"f{i:02d}.wav" for i in range(12)]
    by_split = {s: [w.source for w in folder.iter_clips(tmp_path, split=s)] for s in ("train", "valid", "test")}
    assert sorted(sum(by_split.values(), [])) == [f"f{i:02d}.wav" for i in range(12)]
    for s, files in by_split.items():
        assert all(folder.split_of(f) == s for f in files)


def test_bad_files_raise_user_error(tmp_path):
    (tmp_path / "junk.wav").write_bytes(b"RIFF....garbage" * 10)
    with pytest.raises(UserError, match="junk.wav"):
        list(folder.file_windows(tmp_path / "junk.wav", "junk.wav"))
    sf.write(str(tmp_path / "empty.wav"), np.zeros(0), 16000)
    with pytest.raises(UserError, match="empty"):
        list(folder.file_windows(tmp_path / "empty.wav", "empty.wav"))
    y = tone(1.0, 16000)
    y[100] = np.nan
    sf.write(str(tmp_path / "nan.wav"), y, 16000, subtype="FLOAT")
    with pytest.raises(UserError, match="NaN"):
        list(folder.file_windows(tmp_path / "nan.wav", "nan.wav"))
    with pytest.raises(UserError, match="does not exist"):
        folder.list_audio(tmp_path / "nope")
