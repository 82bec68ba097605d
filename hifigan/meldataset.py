"""HiFi-GAN's log-mel spectrogram: the project's one mel implementation.

`mel_spectrogram` keeps the official signature and numerics: reflect-pad (n_fft - hop) / 2
each side, Hann window, magnitude sqrt(re^2 + im^2 + 1e-9), librosa Slaney mel basis,
log(clamp(x, 1e-5)). Prep, training-time checks, vocoder training and evaluation all call it.
"""

from __future__ import annotations

import numpy as np
import torch

from melcore.audio import resample
from melcore.mel_config import CLIP_RATE, MelConfig

# Cached per full configuration and device (the official cache keyed only on fmax and
# device, so two configs sharing fmax silently shared a basis).
_MEL_BASIS: dict[tuple, torch.Tensor] = {}
_WINDOW: dict[tuple, torch.Tensor] = {}


def dynamic_range_compression_torch(x: torch.Tensor, C: float = 1, clip_val: float = 1e-5) -> torch.Tensor:
    return torch.log(torch.clamp(x, min=clip_val) * C)


def spectral_normalize_torch(magnitudes: torch.Tensor) -> torch.Tensor:
    return dynamic_range_compression_torch(magnitudes)


def mel_basis(sampling_rate: int, n_fft: int, num_mels: int, fmin: float, fmax: float | None) -> np.ndarray:
    """librosa's Slaney-normalised mel filterbank, [num_mels, n_fft // 2 + 1] float32."""
    import librosa

    return librosa.filters.mel(
        sr=sampling_rate, n_fft=n_fft, n_mels=num_mels, fmin=fmin, fmax=fmax
    ).astype(np.float32)


def mel_spectrogram(
    y: torch.Tensor,
    n_fft: int,
    num_mels: int,
    sampling_rate: int,
    hop_size: int,
    win_size: int,
    fmin: float,
    fmax: float | None,
    center: bool = False,
) -> torch.Tensor:
    """Log-mel of float audio `y` [B, T] (or [T]) -> [B, num_mels, frames]."""
    if y.dim() == 1:
        y = y.unsqueeze(0)
    device, dtype = y.device, y.dtype
    basis_key = (sampling_rate, n_fft, num_mels, fmin, fmax, str(device), dtype)
    if basis_key not in _MEL_BASIS:
        basis = mel_basis(sampling_rate, n_fft, num_mels, fmin, fmax)
        _MEL_BASIS[basis_key] = torch.from_numpy(basis).to(device=device, dtype=dtype)
    window_key = (win_size, str(device), dtype)
    if window_key not in _WINDOW:
        _WINDOW[window_key] = torch.hann_window(win_size, device=device, dtype=dtype)

    pad = int((n_fft - hop_size) / 2)
    y = torch.nn.functional.pad(y.unsqueeze(1), (pad, pad), mode="reflect").squeeze(1)
    spec = torch.stft(
        y,
        n_fft,
        hop_length=hop_size,
        win_length=win_size,
        window=_WINDOW[window_key],
        center=center,
        pad_mode="reflect",
        normalized=False,
        onesided=True,
        return_complex=True,
    )
    spec = torch.sqrt(spec.real.pow(2) + spec.imag.pow(2) + 1e-9)
    spec = torch.matmul(_MEL_BASIS[basis_key], spec)
    return spectral_normalize_torch(spec)


def prepare_audio(y: np.ndarray, sr: int, config: MelConfig) -> np.ndarray:
    """Clip audio -> the analysis signal: resampled to the preset's rate, peak-normalised."""
    y = resample(np.asarray(y, dtype=np.float32), sr, config.sampling_rate)
    if config.peak_normalize is not None:
        peak = float(np.max(np.abs(y))) if y.size else 0.0
        if peak > 0:
            y = y * (config.peak_normalize / peak)
    return y.astype(np.float32)


def audio_to_mel(y: np.ndarray, config: MelConfig, sr: int = CLIP_RATE) -> np.ndarray:
    """A clip (float mono at `sr`, 16 kHz by default) -> float32 log-mel [num_mels, frames]."""
    analysis = prepare_audio(y, sr, config)
    with torch.no_grad():
        mel = mel_spectrogram(torch.from_numpy(analysis), **config.mel_kwargs())
    return mel[0].numpy().astype(np.float32)
