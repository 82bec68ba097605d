"""Griffin-Lim inversion of HiFi-GAN log-mels: the fallback when no neural vocoder matches.

log-mel -> mel magnitude (exp) -> linear magnitude (non-negative least squares against the
Slaney mel basis, hifigan.meldataset.mel_basis) -> librosa.griffinlim. The result is audibly
phasey; outputs made this way are always labelled as the fallback.
"""

from __future__ import annotations

import numpy as np

from hifigan.meldataset import mel_basis
from melcore.mel_config import MelConfig

DEFAULT_ITERS = 64


def mel_to_linear(log_mel: np.ndarray, config: MelConfig) -> np.ndarray:
    """Log-mel [num_mels, T] -> non-negative linear magnitude [n_fft // 2 + 1, T]."""
    import librosa

    basis = mel_basis(config.sampling_rate, config.n_fft, config.num_mels, config.fmin, config.fmax)
    mel = np.exp(np.asarray(log_mel, dtype=np.float64))
    # The analysis floors mel energy at 1e-5; treat the floor as silence so it does not
    # become a broadband hiss after inversion.
    mel = np.where(np.asarray(log_mel) <= np.log(1e-5) + 1e-3, 0.0, mel)
    return librosa.util.nnls(basis.astype(np.float64), mel).astype(np.float32)


def griffin_lim(
    log_mel: np.ndarray, config: MelConfig, n_iter: int = DEFAULT_ITERS, seed: int = 0
) -> np.ndarray:
    """Log-mel [num_mels, T] -> float32 audio [T * hop_size] at config.sampling_rate."""
    import librosa

    if n_iter < 32:
        raise ValueError("Griffin-Lim needs at least 32 iterations for usable audio")
    frames = log_mel.shape[-1]
    hop = config.hop_size
    magnitude = mel_to_linear(log_mel, config)
    # librosa's centred STFT of frames * hop samples has frames + 1 columns: repeat the last.
    magnitude = np.concatenate([magnitude, magnitude[:, -1:]], axis=1)
    y = librosa.griffinlim(
        magnitude,
        n_iter=n_iter,
        hop_length=hop,
        win_length=config.win_size,
        n_fft=config.n_fft,
        window="hann",
        center=True,
        length=frames * hop,
        random_state=seed,
    )
    # The analysis reflect-pads (n_fft - hop) / 2 and uses center=False, so analysis frame t is
    # centred on sample t * hop + hop / 2; librosa's centred frames sit at t * hop. Shift by
    # hop / 2 so the inverted audio lines up with the clip the mel was taken from.
    shift = hop // 2
    y = np.concatenate([np.zeros(shift, dtype=y.dtype), y[: frames * hop - shift]])
    return np.clip(y, -1.0, 1.0).astype(np.float32)
