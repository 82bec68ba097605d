import numpy as np
import pytest
import torch

from hifigan.meldataset import audio_to_mel, mel_basis, mel_spectrogram, prepare_audio
from melcore.mel_config import CLIP_RATE, LOG_FLOOR, MelConfig


def numpy_reference_mel(y, n_fft, num_mels, sr, hop, win, fmin, fmax):
    """HiFi-GAN's formula written independently in NumPy (float64)."""
    pad = (n_fft - hop) // 2
    y = np.pad(y.astype(np.float64), (pad, pad), mode="reflect")
    n = np.arange(win)
    window = 0.5 - 0.5 * np.cos(2 * np.pi * n / win)  # periodic Hann
    left = (n_fft - win) // 2
    full_window = np.zeros(n_fft)
    full_window[left : left + win] = window
    frames = 1 + (len(y) - n_fft) // hop
    idx = np.arange(n_fft)[None, :] + hop * np.arange(frames)[:, None]
    spec = np.fft.rfft(y[idx] * full_window, axis=1).T
    mag = np.sqrt(spec.real**2 + spec.imag**2 + 1e-9)
    mel = mel_basis(sr, n_fft, num_mels, fmin, fmax).astype(np.float64) @ mag
    return np.log(np.clip(mel, 1e-5, None))


CONFIGS = [
    dict(n_fft=1024, num_mels=80, sampling_rate=16000, hop_size=256, win_size=1024, fmin=0, fmax=8000),
    dict(n_fft=1024, num_mels=80, sampling_rate=22050, hop_size=256, win_size=1024, fmin=0, fmax=8000),
    dict(n_fft=512, num_mels=64, sampling_rate=16000, hop_size=128, win_size=400, fmin=30, fmax=7600),
    dict(n_fft=1024, num_mels=80, sampling_rate=22050, hop_size=256, win_size=1024, fmin=0, fmax=None),
]


@pytest.mark.parametrize("cfg", CONFIGS)
def test_matches_independent_numpy_formula(cfg, rng):
    t = np.arange(12000) / cfg["sampling_rate"]
    y = 0.5 * np.sin(2 * np.pi * 440 * t) + 0.05 * rng.standard_normal(t.size)
    y = y.astype(np.float32)
    ours = mel_spectrogram(torch.from_numpy(y)[None], **cfg)[0].numpy()
    ref = numpy_reference_mel(
        y, cfg["n_fft"], cfg["num_mels"], cfg["sampling_rate"], cfg["hop_size"],
        cfg["win_size"], cfg["fmin"], cfg["fmax"],
    )
    assert ours.shape == ref.shape == (cfg["num_mels"], len(y) // cfg["hop_size"])
    assert np.max(np.abs(ours - ref)) < 1e-4


@pytest.mark.parametrize("length", [256 * 10, 256 * 10 + 1, 256 * 10 + 255, 64000, 88200])
def test_frame_count_is_length_over_hop(length):
    y = torch.zeros(2, length)
    mel = mel_spectrogram(y, 1024, 80, 22050, 256, 1024, 0, 8000)
    assert mel.shape == (2, 80, length // 256)
    assert MelConfig().num_frames(length) == length // 256


def test_silence_sits_on_the_log_floor():
    mel = mel_spectrogram(torch.zeros(1, 4096), 1024, 80, 16000, 256, 1024, 0, 8000)
    assert torch.allclose(mel, torch.full_like(mel, LOG_FLOOR))


def test_cache_keys_on_full_configuration():
    # Same fmax and device, different num_mels/rate: the official cache would reuse a basis.
    y = torch.randn(1, 8192)
    a = mel_spectrogram(y, 1024, 80, 16000, 256, 1024, 0, 8000)
    b = mel_spectrogram(y, 1024, 64, 22050, 256, 1024, 0, 8000)
    c = mel_spectrogram(y, 1024, 80, 16000, 256, 1024, 0, 8000)
    assert a.shape[1] == 80 and b.shape[1] == 64
    assert torch.equal(a, c)


def test_batch_rows_equal_single_calls():
    y = torch.randn(3, 5000)
    batch = mel_spectrogram(y, 1024, 80, 16000, 256, 1024, 0, 8000)
    for i in range(3):
        single = mel_spectrogram(y[i : i + 1], 1024, 80, 16000, 256, 1024, 0, 8000)
        assert torch.allclose(batch[i], single[0], atol=1e-5)


def test_loud_sine_peaks_in_its_mel_band():
    cfg = MelConfig.from_preset("16k")
    t = np.arange(CLIP_RATE) / CLIP_RATE
    mel = audio_to_mel(np.sin(2 * np.pi * 1000 * t).astype(np.float32), cfg)
    centers = __import__("librosa").mel_frequencies(cfg.num_mels + 2, fmin=0, fmax=8000)[1:-1]
    assert abs(centers[int(np.argmax(mel.mean(axis=1)))] - 1000) < 60


def test_universal_preset_resamples_clip_to_22050_before_analysis():
    cfg = MelConfig.from_preset("universal")
    y = np.random.default_rng(0).uniform(-0.5, 0.5, 64000).astype(np.float32)
    analysis = prepare_audio(y, CLIP_RATE, cfg)
    assert len(analysis) == 88200
    assert np.isclose(np.max(np.abs(analysis)), 0.95, atol=1e-6)
    assert audio_to_mel(y, cfg).shape == (80, 88200 // 256)
