"""The UNet of improved-diffusion, for 1-channel mel spectrograms [B, 1, num_mels, frames].

Module layout and parameter names are upstream's, so an upstream checkpoint loads with
strict=True (and this model's checkpoints load into upstream). Differences: attention runs
through torch's scaled_dot_product_attention (upstream's einsum kept as
attention_impl="einsum"), gradient checkpointing uses torch.utils.checkpoint, inputs need
not be square (any H x W that the downsampling divides), and channels_last/autocast work.
"""

from __future__ import annotations

import math
from abc import abstractmethod
from collections.abc import Iterable, Sequence

import torch as th
import torch.nn as nn
import torch.nn.functional as F

from melcore.errors import UserError

from .fp16_util import convert_module_to_f16, convert_module_to_f32
from .nn import (
    SiLU,
    avg_pool_nd,
    checkpoint,
    conv_nd,
    linear,
    normalization,
    timestep_embedding,
    zero_module,
)

ATTENTION_IMPLS = ("sdpa", "einsum")


class TimestepBlock(nn.Module):
    """A module whose forward takes the timestep embedding as a second argument."""

    @abstractmethod
    def forward(self, x: th.Tensor, emb: th.Tensor) -> th.Tensor:
        """Apply the module to x given embeddings emb."""


class TimestepEmbedSequential(nn.Sequential, TimestepBlock):
    """nn.Sequential that hands the embedding to the children that take one."""

    def forward(self, x: th.Tensor, emb: th.Tensor) -> th.Tensor:
        for layer in self:
            x = layer(x, emb) if isinstance(layer, TimestepBlock) else layer(x)
        return x


class Upsample(nn.Module):
    """Nearest-neighbour 2x upsampling, optionally followed by a 3x3 conv (`.conv`).

    For dims=3 only the inner two dimensions are upsampled.
    """

    def __init__(self, channels: int, use_conv: bool, dims: int = 2) -> None:
        super().__init__()
        self.channels = channels
        self.use_conv = use_conv
        self.dims = dims
        if use_conv:
            self.conv = conv_nd(dims, channels, channels, 3, padding=1)

    def forward(self, x: th.Tensor) -> th.Tensor:
        if x.shape[1] != self.channels:
            raise ValueError(f"Upsample expects {self.channels} channels, got {x.shape[1]}")
        if self.dims == 3:
            x = F.interpolate(x, (x.shape[2], x.shape[3] * 2, x.shape[4] * 2), mode="nearest")
        else:
            x = F.interpolate(x, scale_factor=2, mode="nearest")
        if self.use_conv:
            x = self.conv(x)
        return x


class Downsample(nn.Module):
    """2x downsampling (`.op`): a strided 3x3 conv, or average pooling without use_conv."""

    def __init__(self, channels: int, use_conv: bool, dims: int = 2) -> None:
        super().__init__()
        self.channels = channels
        self.use_conv = use_conv
        self.dims = dims
        stride = 2 if dims != 3 else (1, 2, 2)
        if use_conv:
            self.op = conv_nd(dims, channels, channels, 3, stride=stride, padding=1)
        else:
            self.op = avg_pool_nd(dims, kernel_size=stride, stride=stride)

    def forward(self, x: th.Tensor) -> th.Tensor:
        if x.shape[1] != self.channels:
            raise ValueError(f"Downsample expects {self.channels} channels, got {x.shape[1]}")
        return self.op(x)


class ResBlock(TimestepBlock):
    """Residual block conditioned on the timestep embedding.

    :param use_conv: with a channel change, use a 3x3 conv on the skip path (else 1x1).
    :param use_scale_shift_norm: the embedding scales and shifts the second norm's output
        (FiLM) instead of being added before it.
    """

    def __init__(
        self,
        channels: int,
        emb_channels: int,
        dropout: float,
        out_channels: int | None = None,
        use_conv: bool = False,
        use_scale_shift_norm: bool = False,
        dims: int = 2,
        use_checkpoint: bool = False,
    ) -> None:
        super().__init__()
        self.channels = channels
        self.emb_channels = emb_channels
        self.dropout = dropout
        self.out_channels = out_channels or channels
        self.use_conv = use_conv
        self.use_checkpoint = use_checkpoint
        self.use_scale_shift_norm = use_scale_shift_norm

        self.in_layers = nn.Sequential(
            normalization(channels),
            SiLU(),
            conv_nd(dims, channels, self.out_channels, 3, padding=1),
        )
        self.emb_layers = nn.Sequential(
            SiLU(),
            linear(
                emb_channels, 2 * self.out_channels if use_scale_shift_norm else self.out_channels
            ),
        )
        self.out_layers = nn.Sequential(
            normalization(self.out_channels),
            SiLU(),
            nn.Dropout(p=dropout),
            # Zero init: each block starts as the identity.
            zero_module(conv_nd(dims, self.out_channels, self.out_channels, 3, padding=1)),
        )
        if self.out_channels == channels:
            self.skip_connection: nn.Module = nn.Identity()
        elif use_conv:
            self.skip_connection = conv_nd(dims, channels, self.out_channels, 3, padding=1)
        else:
            self.skip_connection = conv_nd(dims, channels, self.out_channels, 1)

    def forward(self, x: th.Tensor, emb: th.Tensor) -> th.Tensor:
        return checkpoint(self._forward, (x, emb), self.parameters(), self.use_checkpoint)

    def _forward(self, x: th.Tensor, emb: th.Tensor) -> th.Tensor:
        h = self.in_layers(x)
        emb_out = self.emb_layers(emb).type(h.dtype)
        while emb_out.dim() < h.dim():
            emb_out = emb_out[..., None]
        if self.use_scale_shift_norm:
            out_norm, out_rest = self.out_layers[0], self.out_layers[1:]
            scale, shift = th.chunk(emb_out, 2, dim=1)
            h = out_norm(h) * (1 + scale) + shift
            h = out_rest(h)
        else:
            h = self.out_layers(h + emb_out)
        return self.skip_connection(x) + h


class QKVAttention(nn.Module):
    """Upstream's attention: einsum with softmax in float32 (the reference implementation).

    Takes qkv [N, 3*C, T] (q, k, v stacked on channels) and returns [N, C, T].
    """

    def forward(self, qkv: th.Tensor) -> th.Tensor:
        ch = qkv.shape[1] // 3
        q, k, v = th.split(qkv, ch, dim=1)
        # Scaling q and k by ch**-1/4 each (not the product afterwards) is kinder to fp16.
        scale = 1 / math.sqrt(math.sqrt(ch))
        weight = th.einsum("bct,bcs->bts", q * scale, k * scale)
        weight = th.softmax(weight.float(), dim=-1).type(weight.dtype)
        return th.einsum("bts,bcs->bct", weight, v)


class SDPAttention(nn.Module):
    """The same attention through F.scaled_dot_product_attention (fused kernels on GPU).

    Takes qkv [B, H * 3 * C, T] laid out as upstream after its reshape to
    [B * H, 3 * C, T] (per head: q, then k, then v) and returns [B, H * C, T].
    """

    def __init__(self, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads

    def forward(self, qkv: th.Tensor) -> th.Tensor:
        b, width, length = qkv.shape
        ch = width // (3 * self.num_heads)
        # [B, H, 3C, T] -> [B, H, T, 3C]; q, k, v are then [B, H, T, C]. The copy makes the
        # head dim unit-stride, which the fused (flash / memory-efficient) kernels require;
        # without it SDPA silently falls back to the slow math kernel.
        qkv = qkv.reshape(b, self.num_heads, 3 * ch, length).transpose(-1, -2).contiguous()
        q, k, v = qkv.split(ch, dim=-1)
        # SDPA's default scale 1/sqrt(C) equals upstream's ch**-1/4 on q and on k.
        out = F.scaled_dot_product_attention(q, k, v)
        return out.transpose(-1, -2).reshape(b, self.num_heads * ch, length)


class AttentionBlock(nn.Module):
    """Self-attention over all spatial positions (any number of spatial dims).

    :param attention_impl: "sdpa" (default) or "einsum" (upstream's code; the reference).
    """

    def __init__(
        self,
        channels: int,
        num_heads: int = 1,
        use_checkpoint: bool = False,
        attention_impl: str = "sdpa",
    ) -> None:
        super().__init__()
        if attention_impl not in ATTENTION_IMPLS:
            raise UserError(
                f"--attention_impl: unknown value {attention_impl!r}; use one of {ATTENTION_IMPLS}"
            )
        if channels % num_heads:
            raise UserError(
                f"--num_heads: {channels} channels do not split into {num_heads} heads; "
                "pick a num_heads that divides every level's channel count"
            )
        self.channels = channels
        self.num_heads = num_heads
        self.use_checkpoint = use_checkpoint
        self.attention_impl = attention_impl

        self.norm = normalization(channels)
        self.qkv = conv_nd(1, channels, channels * 3, 1)
        self.attention: nn.Module = (
            SDPAttention(num_heads) if attention_impl == "sdpa" else QKVAttention()
        )
        self.proj_out = zero_module(conv_nd(1, channels, channels, 1))

    def forward(self, x: th.Tensor) -> th.Tensor:
        return checkpoint(self._forward, (x,), self.parameters(), self.use_checkpoint)

    def _forward(self, x: th.Tensor) -> th.Tensor:
        b, c, *spatial = x.shape
        x = x.reshape(b, c, -1)
        qkv = self.qkv(self.norm(x))
        if self.attention_impl == "sdpa":
            h = self.attention(qkv)
        else:
            h = self.attention(qkv.reshape(b * self.num_heads, -1, qkv.shape[2]))
            h = h.reshape(b, -1, h.shape[-1])
        h = self.proj_out(h)
        return (x + h).reshape(b, c, *spatial)


class UNetModel(nn.Module):
    """The UNet with timestep embedding and attention.

    :param in_channels: input channels (1 for mels).
    :param model_channels: base channel count.
    :param out_channels: output channels (2 * in_channels when the variance is learned).
    :param num_res_blocks: residual blocks per level.
    :param attention_resolutions: downsample rates (1, 2, 4, ...) at which attention
        blocks are added; e.g. containing 4 means attention at 4x downsampling.
    :param dropout: dropout probability in the residual blocks.
    :param channel_mult: channel multiplier per level; len(channel_mult) - 1 downsamplings,
        so every spatial size must be a multiple of 2 ** (len(channel_mult) - 1).
    :param conv_resample: learned convolutions for up/downsampling.
    :param dims: 1, 2 or 3 spatial dimensions.
    :param num_classes: if set, the model is class-conditional (forward needs y).
    :param use_checkpoint: gradient checkpointing (less memory, more compute).
    :param num_heads: attention heads; num_heads_upsample (-1: same) for the decoder.
    :param use_scale_shift_norm: FiLM-style conditioning in the residual blocks.
    :param attention_impl: "sdpa" or "einsum" (upstream's reference).
    """

    def __init__(
        self,
        in_channels: int,
        model_channels: int,
        out_channels: int,
        num_res_blocks: int,
        attention_resolutions: Iterable[int],
        dropout: float = 0,
        channel_mult: Sequence[int] = (1, 2, 4, 8),
        conv_resample: bool = True,
        dims: int = 2,
        num_classes: int | None = None,
        use_checkpoint: bool = False,
        num_heads: int = 1,
        num_heads_upsample: int = -1,
        use_scale_shift_norm: bool = False,
        attention_impl: str = "sdpa",
        patch_size: Sequence[int] = (1, 1),
    ) -> None:
        super().__init__()
        if num_heads_upsample == -1:
            num_heads_upsample = num_heads

        self.in_channels = in_channels
        self.model_channels = model_channels
        self.out_channels = out_channels
        self.num_res_blocks = num_res_blocks
        self.attention_resolutions = tuple(attention_resolutions)
        self.dropout = dropout
        self.channel_mult = tuple(channel_mult)
        self.conv_resample = conv_resample
        self.dims = dims
        self.num_classes = num_classes
        self.use_checkpoint = use_checkpoint
        self.num_heads = num_heads
        self.num_heads_upsample = num_heads_upsample
        self.attention_impl = attention_impl
        self.channels_last = False
        # Space-to-depth before the torso: a (freq, time) patch of the input becomes channels,
        # so every level runs on a patch-times smaller grid (mels are smooth in time).
        self.patch_size = tuple(int(p) for p in patch_size)
        patch_area = self.patch_size[0] * self.patch_size[1]
        time_embed_dim = model_channels * 4

        def res_block(ch_in: int, ch_out: int | None = None) -> ResBlock:
            return ResBlock(
                ch_in,
                time_embed_dim,
                dropout,
                out_channels=ch_out,
                dims=dims,
                use_checkpoint=use_checkpoint,
                use_scale_shift_norm=use_scale_shift_norm,
            )

        def attention(ch: int, heads: int) -> AttentionBlock:
            return AttentionBlock(
                ch, num_heads=heads, use_checkpoint=use_checkpoint, attention_impl=attention_impl
            )

        self.time_embed = nn.Sequential(
            linear(model_channels, time_embed_dim),
            SiLU(),
            linear(time_embed_dim, time_embed_dim),
        )
        if num_classes is not None:
            self.label_emb = nn.Embedding(num_classes, time_embed_dim)

        self.input_blocks = nn.ModuleList(
            [
                TimestepEmbedSequential(
                    conv_nd(dims, in_channels * patch_area, model_channels, 3, padding=1)
                )
            ]
        )
        input_block_chans = [model_channels]
        ch = model_channels
        ds = 1
        for level, mult in enumerate(self.channel_mult):
            for _ in range(num_res_blocks):
                layers: list[nn.Module] = [res_block(ch, mult * model_channels)]
                ch = mult * model_channels
                if ds in self.attention_resolutions:
                    layers.append(attention(ch, num_heads))
                self.input_blocks.append(TimestepEmbedSequential(*layers))
                input_block_chans.append(ch)
            if level != len(self.channel_mult) - 1:
                self.input_blocks.append(
                    TimestepEmbedSequential(Downsample(ch, conv_resample, dims=dims))
                )
                input_block_chans.append(ch)
                ds *= 2

        self.middle_block = TimestepEmbedSequential(
            res_block(ch), attention(ch, num_heads), res_block(ch)
        )

        self.output_blocks = nn.ModuleList([])
        for level, mult in list(enumerate(self.channel_mult))[::-1]:
            for i in range(num_res_blocks + 1):
                layers = [res_block(ch + input_block_chans.pop(), model_channels * mult)]
                ch = model_channels * mult
                if ds in self.attention_resolutions:
                    layers.append(attention(ch, num_heads_upsample))
                if level and i == num_res_blocks:
                    layers.append(Upsample(ch, conv_resample, dims=dims))
                    ds //= 2
                self.output_blocks.append(TimestepEmbedSequential(*layers))

        self.out = nn.Sequential(
            normalization(ch),
            SiLU(),
            zero_module(conv_nd(dims, model_channels, out_channels * patch_area, 3, padding=1)),
        )

    # ------------------------------------------------------------------ precision / layout

    def convert_to_fp16(self) -> None:
        """Cast the torso's convolutions to float16 (upstream's use_fp16 scheme)."""
        self.input_blocks.apply(convert_module_to_f16)
        self.middle_block.apply(convert_module_to_f16)
        self.output_blocks.apply(convert_module_to_f16)

    def convert_to_fp32(self) -> None:
        """Undo convert_to_fp16."""
        self.input_blocks.apply(convert_module_to_f32)
        self.middle_block.apply(convert_module_to_f32)
        self.output_blocks.apply(convert_module_to_f32)

    def convert_to_channels_last(self) -> UNetModel:
        """Store conv weights and run 2-D activations as NHWC (faster convs on tensor cores).

        Outputs are numerically the same as in the default layout; only strides change.
        """
        if self.dims != 2:
            raise ValueError("channels_last needs a 2-D model (dims=2)")
        self.to(memory_format=th.channels_last)
        self.channels_last = True
        return self

    @property
    def inner_dtype(self) -> th.dtype:
        """dtype of the torso (float16 after convert_to_fp16)."""
        return next(self.input_blocks.parameters()).dtype

    @property
    def downsample_factor(self) -> int:
        """Every spatial size of the input must be a multiple of this (times the patch)."""
        return 2 ** (len(self.channel_mult) - 1)

    @property
    def size_multiples(self) -> tuple[int, int]:
        """(height, width) multiples a 2-D input needs: downsampling times the patch."""
        f = self.downsample_factor
        return f * self.patch_size[0], f * self.patch_size[1]

    def _patchify(self, h: th.Tensor) -> th.Tensor:
        pf, pt = self.patch_size
        if pf == pt == 1:
            return h
        b, c, hh, ww = h.shape
        h = h.reshape(b, c, hh // pf, pf, ww // pt, pt).permute(0, 1, 3, 5, 2, 4)
        return h.reshape(b, c * pf * pt, hh // pf, ww // pt)

    def _unpatchify(self, h: th.Tensor) -> th.Tensor:
        pf, pt = self.patch_size
        if pf == pt == 1:
            return h
        b, c, hh, ww = h.shape
        c //= pf * pt
        h = h.reshape(b, c, pf, pt, hh, ww).permute(0, 1, 4, 2, 5, 3)
        return h.reshape(b, c, hh * pf, ww * pt)

    # ------------------------------------------------------------------ forward

    def _check_input(self, x: th.Tensor) -> None:
        spatial = tuple(x.shape[2:]) if self.dims != 3 else tuple(x.shape[3:])
        f = self.downsample_factor
        multiples = self.size_multiples if self.dims == 2 else (f,) * len(spatial)
        if x.dim() != self.dims + 2 or x.shape[1] != self.in_channels:
            raise UserError(
                f"UNet input: expected [B, {self.in_channels}, ...] with {self.dims} spatial "
                f"dims, got {tuple(x.shape)}; check --in_channels and the data"
            )
        if any(s % m for s, m in zip(spatial, multiples)):
            need = "x".join(map(str, multiples))
            raise UserError(
                f"UNet input: spatial size {'x'.join(map(str, x.shape[2:]))} is not a multiple "
                f"of {need} (the model downsamples {len(self.channel_mult) - 1} times, patch "
                f"{'x'.join(map(str, self.patch_size))}); use a crop width / mel count "
                f"divisible by {need} or a shorter --channel_mult"
            )

    def _embed(self, timesteps: th.Tensor, y: th.Tensor | None, batch: int) -> th.Tensor:
        if (y is not None) != (self.num_classes is not None):
            raise ValueError("pass y if and only if the model is class-conditional")
        emb = self.time_embed(timestep_embedding(timesteps, self.model_channels))
        if self.num_classes is not None:
            if y.shape != (batch,):
                raise ValueError(f"y must have shape ({batch},), got {tuple(y.shape)}")
            emb = emb + self.label_emb(y)
        return emb

    def _prepare(self, x: th.Tensor) -> th.Tensor:
        h = x.type(self.inner_dtype)
        if self.channels_last:
            h = h.contiguous(memory_format=th.channels_last)
        return h

    def forward(self, x: th.Tensor, timesteps: th.Tensor, y: th.Tensor | None = None) -> th.Tensor:
        """Predict [N, out_channels, ...] from x [N, in_channels, ...] at `timesteps` [N].

        The result has x's dtype, also under autocast (upstream returned the autocast
        dtype there), so the diffusion arithmetic stays in float32.
        """
        self._check_input(x)
        emb = self._embed(timesteps, y, x.shape[0])
        hs = []
        h = self._prepare(self._patchify(x))
        for module in self.input_blocks:
            h = module(h, emb)
            hs.append(h)
        h = self.middle_block(h, emb)
        for module in self.output_blocks:
            h = module(th.cat([h, hs.pop()], dim=1), emb)
        h = h.type(x.dtype)
        return self._unpatchify(self.out(h).type(x.dtype))

    def get_feature_vectors(
        self, x: th.Tensor, timesteps: th.Tensor, y: th.Tensor | None = None
    ) -> dict[str, list[th.Tensor] | th.Tensor]:
        """All intermediate activations: 'down' (list), 'middle', 'up' (list)."""
        self._check_input(x)
        emb = self._embed(timesteps, y, x.shape[0])
        result: dict[str, list[th.Tensor] | th.Tensor] = {"down": [], "up": []}
        hs = []
        h = self._prepare(self._patchify(x))
        for module in self.input_blocks:
            h = module(h, emb)
            hs.append(h)
            result["down"].append(h.type(x.dtype))
        h = self.middle_block(h, emb)
        result["middle"] = h.type(x.dtype)
        for module in self.output_blocks:
            h = module(th.cat([h, hs.pop()], dim=1), emb)
            result["up"].append(h.type(x.dtype))
        return result
