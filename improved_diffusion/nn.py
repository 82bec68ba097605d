"""Small neural-network helpers shared by the UNet and the diffusion code (upstream names)."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence

import torch as th
import torch.nn as nn
from torch.utils.checkpoint import checkpoint as _torch_checkpoint


class SiLU(nn.SiLU):
    """x * sigmoid(x); kept as its own name so upstream imports keep working."""


class GroupNorm32(nn.GroupNorm):
    """GroupNorm that always computes in float32 (fp16/bf16 statistics are too coarse)."""

    def forward(self, x: th.Tensor) -> th.Tensor:
        # Under autocast, F.group_norm with a float32 input runs in float32; cast back
        # so the next layer sees the activation dtype it was given.
        return super().forward(x.float()).type(x.dtype)


def conv_nd(dims: int, *args, **kwargs) -> nn.Module:
    """A 1D, 2D or 3D convolution."""
    if dims == 1:
        return nn.Conv1d(*args, **kwargs)
    if dims == 2:
        return nn.Conv2d(*args, **kwargs)
    if dims == 3:
        return nn.Conv3d(*args, **kwargs)
    raise ValueError(f"unsupported dimensions: {dims}")


def linear(*args, **kwargs) -> nn.Linear:
    """A linear layer."""
    return nn.Linear(*args, **kwargs)


def avg_pool_nd(dims: int, *args, **kwargs) -> nn.Module:
    """A 1D, 2D or 3D average pooling layer."""
    if dims == 1:
        return nn.AvgPool1d(*args, **kwargs)
    if dims == 2:
        return nn.AvgPool2d(*args, **kwargs)
    if dims == 3:
        return nn.AvgPool3d(*args, **kwargs)
    raise ValueError(f"unsupported dimensions: {dims}")


@th.no_grad()
def update_ema(
    target_params: Iterable[th.Tensor], source_params: Iterable[th.Tensor], rate: float = 0.99
) -> None:
    """targ <- rate * targ + (1 - rate) * src for every pair, in place.

    One fused multi-tensor kernel per dtype/device group instead of one launch per
    parameter (the upstream loop), with the same arithmetic.
    """
    targets = [p.detach() for p in target_params]
    sources = [p.detach() for p in source_params]
    if len(targets) != len(sources):
        raise ValueError(f"update_ema: {len(targets)} target vs {len(sources)} source tensors")
    if not targets:
        return
    th._foreach_mul_(targets, rate)
    th._foreach_add_(targets, sources, alpha=1 - rate)


def zero_module(module: nn.Module) -> nn.Module:
    """Zero a module's parameters and return it."""
    for p in module.parameters():
        p.detach().zero_()
    return module


def scale_module(module: nn.Module, scale: float) -> nn.Module:
    """Multiply a module's parameters by `scale` and return it."""
    for p in module.parameters():
        p.detach().mul_(scale)
    return module


def mean_flat(tensor: th.Tensor) -> th.Tensor:
    """Mean over every dimension but the batch one."""
    return tensor.mean(dim=list(range(1, tensor.dim())))


def normalization(channels: int) -> nn.Module:
    """The standard normalisation layer: 32 groups, computed in float32."""
    return GroupNorm32(32, channels)


def timestep_embedding(timesteps: th.Tensor, dim: int, max_period: int = 10000) -> th.Tensor:
    """Sinusoidal embeddings [N, dim] of (possibly fractional) timesteps [N]: cos half, then sin."""
    half = dim // 2
    exponent = -math.log(max_period) * th.arange(half, dtype=th.float32) / half
    freqs = th.exp(exponent).to(device=timesteps.device)
    args = timesteps[:, None].float() * freqs[None]
    embedding = th.cat([th.cos(args), th.sin(args)], dim=-1)
    if dim % 2:
        embedding = th.cat([embedding, th.zeros_like(embedding[:, :1])], dim=-1)
    return embedding


def checkpoint(
    func: Callable[..., th.Tensor],
    inputs: Sequence[th.Tensor],
    params: Iterable[th.Tensor],
    flag: bool,
) -> th.Tensor:
    """Run func(*inputs), recomputing its activations in backward when `flag` is set.

    Uses torch's non-reentrant checkpoint, which tracks the parameters itself, so
    `params` is accepted only for upstream's signature. Without grad there is nothing
    to save, so the plain call is made.
    """
    del params
    if flag and th.is_grad_enabled():
        return _torch_checkpoint(func, *inputs, use_reentrant=False)
    return func(*inputs)
