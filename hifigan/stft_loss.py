"""Multi-resolution STFT distance (Parallel WaveGAN, Yamamoto et al. 2020), in torch.

One table of resolutions for the project: the vocoder's training loss uses it and
evaluation.copy_synthesis measures with it.
"""

from __future__ import annotations

import torch

# (n_fft, hop, win) as in Parallel WaveGAN.
RESOLUTIONS = ((512, 50, 240), (1024, 120, 600), (2048, 240, 1200))


def _magnitude(y: torch.Tensor, n_fft: int, hop: int, win: int) -> torch.Tensor:
    window = torch.hann_window(win, device=y.device, dtype=y.dtype)
    spec = torch.stft(y, n_fft, hop, win, window, center=True, return_complex=True)
    # A floor inside the sqrt keeps the gradient finite at silent bins.
    return torch.sqrt(spec.real**2 + spec.imag**2 + 1e-9)


def multi_resolution_stft_loss(y_hat: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean over RESOLUTIONS of spectral convergence + log-magnitude L1; audio [B, L]."""
    total = y_hat.new_zeros(())
    for n_fft, hop, win in RESOLUTIONS:
        s, r = _magnitude(y_hat, n_fft, hop, win), _magnitude(y, n_fft, hop, win)
        convergence = torch.linalg.norm(r - s) / torch.linalg.norm(r).clamp_min(1e-8)
        total = total + convergence + torch.mean(torch.abs(torch.log(r) - torch.log(s)))
    return total / len(RESOLUTIONS)
