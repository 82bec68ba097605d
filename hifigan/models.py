"""HiFi-GAN generator (V1/V2/V3), multi-period and multi-scale discriminators, and losses.

Written to match jik876/hifi-gan's models.py layer for layer: the same module names,
hyper-parameters and weight-norm parameters (`weight_g`/`weight_v`), so an official
`{'generator': state_dict}` checkpoint loads with strict=True.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn import AvgPool1d, Conv1d, Conv2d, ConvTranspose1d
from torch.nn.utils import spectral_norm

from hifigan.utils import get_padding, init_weights

# What Generator reads from a config besides the analysis fields: two configs that agree on
# these (and num_mels) build generators with the same parameter shapes.
GENERATOR_KEYS = ("resblock", "upsample_rates", "upsample_kernel_sizes", "upsample_initial_channel",
                  "resblock_kernel_sizes", "resblock_dilation_sizes")

LRELU_SLOPE = 0.1


def weight_norm(module: nn.Module) -> nn.Module:
    """torch.nn.utils.weight_norm: the (deprecated) hook form is kept on purpose because it
    stores `weight_g`/`weight_v`, the key names of every official HiFi-GAN checkpoint."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        return torch.nn.utils.weight_norm(module)


def remove_weight_norm(module: nn.Module) -> nn.Module:
    return torch.nn.utils.remove_weight_norm(module)


def _get(h: Mapping[str, Any], name: str, default: Any = None) -> Any:
    return h[name] if name in h else default


class ResBlock1(nn.Module):
    """Three (dilated conv, conv) pairs with residual connections (V1 and V2)."""

    def __init__(self, h: Mapping, channels: int, kernel_size: int = 3, dilation: Sequence[int] = (1, 3, 5)):
        super().__init__()
        self.h = h
        self.convs1 = nn.ModuleList(
            weight_norm(Conv1d(channels, channels, kernel_size, 1, dilation=d, padding=get_padding(kernel_size, d)))
            for d in dilation[:3]
        )
        self.convs1.apply(init_weights)
        self.convs2 = nn.ModuleList(
            weight_norm(Conv1d(channels, channels, kernel_size, 1, dilation=1, padding=get_padding(kernel_size, 1)))
            for _ in range(3)
        )
        self.convs2.apply(init_weights)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for c1, c2 in zip(self.convs1, self.convs2):
            xt = c1(F.leaky_relu(x, LRELU_SLOPE))
            xt = c2(F.leaky_relu(xt, LRELU_SLOPE))
            x = xt + x
        return x

    def remove_weight_norm(self) -> None:
        for layer in self.convs1:
            remove_weight_norm(layer)
        for layer in self.convs2:
            remove_weight_norm(layer)


class ResBlock2(nn.Module):
    """Two dilated convs with residual connections (V3)."""

    def __init__(self, h: Mapping, channels: int, kernel_size: int = 3, dilation: Sequence[int] = (1, 3)):
        super().__init__()
        self.h = h
        self.convs = nn.ModuleList(
            weight_norm(Conv1d(channels, channels, kernel_size, 1, dilation=d, padding=get_padding(kernel_size, d)))
            for d in dilation[:2]
        )
        self.convs.apply(init_weights)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for c in self.convs:
            x = c(F.leaky_relu(x, LRELU_SLOPE)) + x
        return x

    def remove_weight_norm(self) -> None:
        for layer in self.convs:
            remove_weight_norm(layer)


class Generator(nn.Module):
    """Log-mel [B, num_mels, T] -> waveform [B, 1, T * prod(upsample_rates)] in (-1, 1)."""

    def __init__(self, h: Mapping):
        super().__init__()
        self.h = h
        self.num_kernels = len(h["resblock_kernel_sizes"])
        self.num_upsamples = len(h["upsample_rates"])
        ch0 = h["upsample_initial_channel"]
        # The official code hard-codes 80 input bins; num_mels defaults to that.
        self.conv_pre = weight_norm(Conv1d(_get(h, "num_mels", 80), ch0, 7, 1, padding=3))
        resblock = ResBlock1 if str(h["resblock"]) == "1" else ResBlock2

        self.ups = nn.ModuleList()
        for i, (u, k) in enumerate(zip(h["upsample_rates"], h["upsample_kernel_sizes"])):
            self.ups.append(
                weight_norm(ConvTranspose1d(ch0 // (2**i), ch0 // (2 ** (i + 1)), k, u, padding=(k - u) // 2))
            )

        self.resblocks = nn.ModuleList()
        for i in range(len(self.ups)):
            ch = ch0 // (2 ** (i + 1))
            for k, d in zip(h["resblock_kernel_sizes"], h["resblock_dilation_sizes"]):
                self.resblocks.append(resblock(h, ch, k, d))

        self.conv_post = weight_norm(Conv1d(ch, 1, 7, 1, padding=3))
        self.ups.apply(init_weights)
        self.conv_post.apply(init_weights)

    @property
    def hop_size(self) -> int:
        hop = 1
        for u in self.h["upsample_rates"]:
            hop *= u
        return hop

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv_pre(x)
        for i in range(self.num_upsamples):
            x = self.ups[i](F.leaky_relu(x, LRELU_SLOPE))
            xs = None
            for j in range(self.num_kernels):
                out = self.resblocks[i * self.num_kernels + j](x)
                xs = out if xs is None else xs + out
            x = xs / self.num_kernels
        # The official generator uses leaky_relu's default slope (0.01) here, not 0.1.
        x = self.conv_post(F.leaky_relu(x))
        return torch.tanh(x)

    def remove_weight_norm(self) -> None:
        """Fold weight norm into plain weights for inference (same outputs, faster)."""
        for layer in self.ups:
            remove_weight_norm(layer)
        for block in self.resblocks:
            block.remove_weight_norm()
        remove_weight_norm(self.conv_pre)
        remove_weight_norm(self.conv_post)


class DiscriminatorP(nn.Module):
    """Looks at the waveform folded into [T / period, period] with 2-D convs."""

    def __init__(
        self, period: int, kernel_size: int = 5, stride: int = 3, use_spectral_norm: bool = False, divisor: int = 1
    ):
        super().__init__()
        self.period = period
        norm_f = spectral_norm if use_spectral_norm else weight_norm
        pad = (get_padding(5, 1), 0)
        # divisor > 1 narrows every layer (tests and CPU smoke runs only; 1 is the official size).
        chans = [1] + [c // divisor for c in (32, 128, 512, 1024)]
        top = chans[-1]
        self.convs = nn.ModuleList(
            [norm_f(Conv2d(a, b, (kernel_size, 1), (stride, 1), padding=pad)) for a, b in zip(chans[:-1], chans[1:])]
            + [norm_f(Conv2d(top, top, (kernel_size, 1), 1, padding=(2, 0)))]
        )
        self.conv_post = norm_f(Conv2d(top, 1, (3, 1), 1, padding=(1, 0)))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        fmap = []
        b, c, t = x.shape
        if t % self.period != 0:  # pad to a whole number of periods
            n_pad = self.period - (t % self.period)
            x = F.pad(x, (0, n_pad), "reflect")
            t = t + n_pad
        x = x.view(b, c, t // self.period, self.period)
        for layer in self.convs:
            x = F.leaky_relu(layer(x), LRELU_SLOPE)
            fmap.append(x)
        x = self.conv_post(x)
        fmap.append(x)
        return torch.flatten(x, 1, -1), fmap


class MultiPeriodDiscriminator(nn.Module):
    def __init__(self, divisor: int = 1):
        super().__init__()
        self.discriminators = nn.ModuleList(DiscriminatorP(p, divisor=divisor) for p in (2, 3, 5, 7, 11))

    def forward(self, y: torch.Tensor, y_hat: torch.Tensor):
        y_d_rs, y_d_gs, fmap_rs, fmap_gs = [], [], [], []
        for d in self.discriminators:
            y_d_r, fmap_r = d(y)
            y_d_g, fmap_g = d(y_hat)
            y_d_rs.append(y_d_r)
            fmap_rs.append(fmap_r)
            y_d_gs.append(y_d_g)
            fmap_gs.append(fmap_g)
        return y_d_rs, y_d_gs, fmap_rs, fmap_gs


class DiscriminatorS(nn.Module):
    """Grouped strided 1-D convs over the raw (or average-pooled) waveform."""

    def __init__(self, use_spectral_norm: bool = False, divisor: int = 1):
        super().__init__()
        norm_f = spectral_norm if use_spectral_norm else weight_norm
        c1, c2, c3, c4 = (c // divisor for c in (128, 256, 512, 1024))  # divisor <= 8 keeps groups valid
        self.convs = nn.ModuleList(
            [
                norm_f(Conv1d(1, c1, 15, 1, padding=7)),
                norm_f(Conv1d(c1, c1, 41, 2, groups=4, padding=20)),
                norm_f(Conv1d(c1, c2, 41, 2, groups=16, padding=20)),
                norm_f(Conv1d(c2, c3, 41, 4, groups=16, padding=20)),
                norm_f(Conv1d(c3, c4, 41, 4, groups=16, padding=20)),
                norm_f(Conv1d(c4, c4, 41, 1, groups=16, padding=20)),
                norm_f(Conv1d(c4, c4, 5, 1, padding=2)),
            ]
        )
        self.conv_post = norm_f(Conv1d(c4, 1, 3, 1, padding=1))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        fmap = []
        for layer in self.convs:
            x = F.leaky_relu(layer(x), LRELU_SLOPE)
            fmap.append(x)
        x = self.conv_post(x)
        fmap.append(x)
        return torch.flatten(x, 1, -1), fmap


class MultiScaleDiscriminator(nn.Module):
    def __init__(self, divisor: int = 1):
        super().__init__()
        self.discriminators = nn.ModuleList(
            [DiscriminatorS(True, divisor), DiscriminatorS(False, divisor), DiscriminatorS(False, divisor)]
        )
        self.meanpools = nn.ModuleList([AvgPool1d(4, 2, padding=2), AvgPool1d(4, 2, padding=2)])

    def forward(self, y: torch.Tensor, y_hat: torch.Tensor):
        y_d_rs, y_d_gs, fmap_rs, fmap_gs = [], [], [], []
        for i, d in enumerate(self.discriminators):
            if i != 0:
                y = self.meanpools[i - 1](y)
                y_hat = self.meanpools[i - 1](y_hat)
            y_d_r, fmap_r = d(y)
            y_d_g, fmap_g = d(y_hat)
            y_d_rs.append(y_d_r)
            fmap_rs.append(fmap_r)
            y_d_gs.append(y_d_g)
            fmap_gs.append(fmap_g)
        return y_d_rs, y_d_gs, fmap_rs, fmap_gs


def feature_loss(fmap_r, fmap_g) -> torch.Tensor:
    """Feature matching: L1 between every discriminator layer's real and fake maps, x2."""
    loss = 0
    for dr, dg in zip(fmap_r, fmap_g):
        for rl, gl in zip(dr, dg):
            loss += torch.mean(torch.abs(rl - gl))
    return loss * 2


def discriminator_loss(disc_real_outputs, disc_generated_outputs):
    """LSGAN: real -> 1, fake -> 0. Returns (total, per-discriminator real, fake floats)."""
    loss = 0
    r_losses, g_losses = [], []
    for dr, dg in zip(disc_real_outputs, disc_generated_outputs):
        r_loss = torch.mean((1 - dr) ** 2)
        g_loss = torch.mean(dg**2)
        loss += r_loss + g_loss
        r_losses.append(r_loss.item())
        g_losses.append(g_loss.item())
    return loss, r_losses, g_losses


def generator_loss(disc_outputs):
    """LSGAN generator term: fake -> 1. Returns (total, per-discriminator tensors)."""
    loss = 0
    gen_losses = []
    for dg in disc_outputs:
        term = torch.mean((1 - dg) ** 2)
        gen_losses.append(term)
        loss += term
    return loss, gen_losses


def architecture_keys(h: Mapping) -> tuple[str, ...]:
    """The config keys that fix a generator's parameter shapes (a resumed run must keep them)."""
    from hifigan.vocos import VOCOS_KEYS, VOCOS_OPTIONAL_KEYS, is_vocos

    if is_vocos(h):
        return ("generator", *VOCOS_KEYS, *VOCOS_OPTIONAL_KEYS, "n_fft", "num_mels")
    return (*GENERATOR_KEYS, "num_mels")


def build_generator(h: Mapping) -> nn.Module:
    """The generator a config describes: HiFi-GAN's (official configs) or the Fourier-head
    one ("generator": "vocos", see hifigan.vocos)."""
    from hifigan.vocos import VocosGenerator, is_vocos

    return VocosGenerator(h) if is_vocos(h) else Generator(h)
