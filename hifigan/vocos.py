"""A Fourier-head vocoder (Vocos, Siuzdak 2023): log-mel -> STFT magnitude and phase -> iSTFT.

The network runs at the mel frame rate (a stack of ConvNeXt blocks), so it is far cheaper on a
CPU than HiFi-GAN, whose layers run at the audio rate. Its head predicts, per frame, a log
magnitude and a phase for each of the n_fft / 2 + 1 bins; the inverse STFT overlap-adds the
frames with the same Hann window and the same (n_fft - hop) / 2 padding that
hifigan.meldataset.mel_spectrogram uses, so T mel frames become exactly T * hop samples,
aligned with the analysis.

Config keys (beside the mel analysis keys of a HiFi-GAN config): "generator": "vocos",
"vocos_dim", "vocos_intermediate_dim", "vocos_layers", and "vocos_mel_prior" (default false):
when true the head's log magnitude is a correction to the magnitude the mel itself implies
(the filterbank's pseudo-inverse applied to exp(log-mel), the start Griffin-Lim takes), so
training starts from the right spectral envelope and spends its steps on phase and detail;
"vocos_phase" ("direct", the default, as in Vocos; or "integrated"): with "integrated" the
head predicts, per bin and frame, a frequency deviation d in (-1/2, 1/2) bins and a phase
offset, and the phase is the offset plus the running sum of the advance a sinusoid at
(bin + d) makes in one hop (as GANSynth models NSynth notes by instantaneous frequency):
a held partial gets a phase coherent over frames, hence a steady pitch, from the start.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn
from torch.nn import functional as F

VOCOS_KEYS = ("vocos_dim", "vocos_intermediate_dim", "vocos_layers")
# Keys that change what the generator computes without being required in a config.
VOCOS_OPTIONAL_KEYS = ("vocos_mel_prior", "vocos_phase")
PHASE_MODES = ("direct", "integrated")
# HiFi-GAN's mel clamps magnitudes at 1e-5 before the log; the prior's envelope is floored alike.
MAGNITUDE_FLOOR = 1e-5
# exp() of the predicted log magnitude is capped here: an untrained head must not overflow.
MAX_LOG_MAGNITUDE = 4.6  # e^4.6 ~ 100, above any bin of audio peaking at 0.95


class ConvNeXtBlock(nn.Module):
    """Depthwise conv (k=7) -> LayerNorm -> pointwise MLP (GELU) -> scaled residual."""

    def __init__(self, dim: int, intermediate_dim: int, layer_scale: float):
        super().__init__()
        self.dwconv = nn.Conv1d(dim, dim, kernel_size=7, padding=3, groups=dim)
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.pwconv1 = nn.Linear(dim, intermediate_dim)
        self.pwconv2 = nn.Linear(intermediate_dim, dim)
        self.gamma = nn.Parameter(torch.full((dim,), layer_scale))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.dwconv(x).transpose(1, 2)  # [B, T, C]: LayerNorm and Linear act on channels
        y = self.pwconv2(F.gelu(self.pwconv1(self.norm(y))))
        return x + (self.gamma * y).transpose(1, 2)


def overlap_add_istft(spec: torch.Tensor, n_fft: int, hop: int, window: torch.Tensor) -> torch.Tensor:
    """Complex STFT [B, n_fft/2+1, T] -> audio [B, T * hop], the inverse of an analysis that
    reflect-pads (n_fft - hop) / 2 on both sides and frames without centring."""
    frames = torch.fft.irfft(spec, n=n_fft, dim=1) * window[None, :, None]  # [B, n_fft, T]
    num_frames = frames.shape[-1]
    length = (num_frames - 1) * hop + n_fft
    audio = F.fold(frames, output_size=(1, length), kernel_size=(1, n_fft), stride=(1, hop))[:, 0, 0]
    envelope = F.fold(
        (window**2)[None, :, None].expand(1, n_fft, num_frames), output_size=(1, length),
        kernel_size=(1, n_fft), stride=(1, hop),
    )[0, 0, 0]
    pad = (n_fft - hop) // 2
    audio, envelope = audio[:, pad : length - pad], envelope[pad : length - pad]
    return audio / envelope.clamp_min(1e-8)


class VocosGenerator(nn.Module):
    """Log-mel [B, num_mels, T] -> waveform [B, 1, T * hop_size]."""

    def __init__(self, h: Mapping):
        super().__init__()
        self.h = h
        dim, layers = int(h["vocos_dim"]), int(h["vocos_layers"])
        self.n_fft, self.hop, self.win = int(h["n_fft"]), int(h["hop_size"]), int(h["win_size"])
        if self.win > self.n_fft:
            raise ValueError(f"win_size {self.win} exceeds n_fft {self.n_fft}")
        self.embed = nn.Conv1d(int(h.get("num_mels", 80)), dim, kernel_size=7, padding=3)
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.blocks = nn.ModuleList(
            ConvNeXtBlock(dim, int(h["vocos_intermediate_dim"]), 1.0 / layers) for _ in range(layers)
        )
        self.final_norm = nn.LayerNorm(dim, eps=1e-6)
        self.phase_mode = str(h.get("vocos_phase", "direct"))
        if self.phase_mode not in PHASE_MODES:
            raise ValueError(f"vocos_phase {self.phase_mode!r}: choose one of {PHASE_MODES}")
        # Per bin: log magnitude and phase (direct), or log magnitude, phase offset and
        # frequency deviation (integrated).
        outputs = 3 if self.phase_mode == "integrated" else 2
        self.head = nn.Linear(dim, outputs * (self.n_fft // 2 + 1))
        # The analysis window (hann of win_size, centred in n_fft as torch.stft places it).
        left = (self.n_fft - self.win) // 2
        window = F.pad(torch.hann_window(self.win), (left, self.n_fft - self.win - left))
        self.register_buffer("window", window, persistent=False)
        self.mel_prior = bool(h.get("vocos_mel_prior", False))
        if self.mel_prior:
            from hifigan.meldataset import mel_basis

            basis = torch.from_numpy(mel_basis(int(h["sampling_rate"]), self.n_fft, int(h.get("num_mels", 80)),
                                               float(h["fmin"]), h["fmax"]))
            self.register_buffer("mel_inverse", torch.linalg.pinv(basis), persistent=False)  # [bins, mels]
        self.apply(self._init)

    @staticmethod
    def _init(m: nn.Module) -> None:
        if isinstance(m, (nn.Conv1d, nn.Linear)):
            nn.init.trunc_normal_(m.weight, std=0.02)
            nn.init.zeros_(m.bias)

    @property
    def hop_size(self) -> int:
        return self.hop

    def spectrum(self, x: torch.Tensor) -> torch.Tensor:
        """The predicted complex STFT [B, n_fft/2+1, T]."""
        y = self.norm(self.embed(x).transpose(1, 2)).transpose(1, 2)
        for block in self.blocks:
            y = block(y)
        y = self.head(self.final_norm(y.transpose(1, 2))).transpose(1, 2)  # [B, n_fft + 2, T]
        if self.phase_mode == "integrated":
            log_mag, offset, deviation = y.float().chunk(3, dim=1)
            bins = torch.arange(log_mag.shape[1], device=y.device, dtype=torch.float32)[None, :, None]
            advance = 2 * torch.pi * (bins + 0.5 * torch.tanh(deviation)) * (self.hop / self.n_fft)
            phase = offset + torch.cumsum(advance, dim=-1)
        else:
            log_mag, phase = y.float().chunk(2, dim=1)
        if self.mel_prior:
            implied = torch.matmul(self.mel_inverse, torch.exp(x.float()))  # [B, bins, T]
            log_mag = log_mag + torch.log(implied.clamp_min(MAGNITUDE_FLOOR))
        mag = torch.exp(log_mag.clamp(max=MAX_LOG_MAGNITUDE))
        return torch.polar(mag, phase)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        audio = overlap_add_istft(self.spectrum(x), self.n_fft, self.hop, self.window)
        return audio.unsqueeze(1)

    def remove_weight_norm(self) -> None:
        """Nothing to fold (no weight norm); kept so every generator loads the same way."""


def is_vocos(h: Mapping) -> bool:
    return str(h.get("generator", "hifigan")) == "vocos"
