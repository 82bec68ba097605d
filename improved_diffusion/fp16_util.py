"""Helpers for 16-bit training (upstream's master-parameter scheme).

Autocast (`torch.autocast`) is the simpler route and works with this UNet as is; these
helpers are kept for upstream's `use_fp16` path, where the model torso holds fp16 weights
and a flat fp32 copy is optimised.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch as th
import torch.nn as nn
from torch._utils import _flatten_dense_tensors, _unflatten_dense_tensors

_CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)


def convert_module_to_f16(module: nn.Module) -> None:
    """Cast a convolution's weights to float16 (other modules are left alone)."""
    if isinstance(module, _CONVS):
        module.weight.data = module.weight.data.half()
        if module.bias is not None:
            module.bias.data = module.bias.data.half()


def convert_module_to_f32(module: nn.Module) -> None:
    """Undo convert_module_to_f16."""
    if isinstance(module, _CONVS):
        module.weight.data = module.weight.data.float()
        if module.bias is not None:
            module.bias.data = module.bias.data.float()


def make_master_params(model_params: Iterable[th.Tensor]) -> list[nn.Parameter]:
    """One flat float32 parameter holding a copy of every model parameter."""
    flat = _flatten_dense_tensors([p.detach().float() for p in model_params])
    master = nn.Parameter(flat)
    master.requires_grad = True
    return [master]


def model_grads_to_master_grads(
    model_params: Iterable[th.Tensor], master_params: list[nn.Parameter]
) -> None:
    """Copy the model's gradients into the flat master parameter's .grad."""
    master_params[0].grad = _flatten_dense_tensors([p.grad.detach().float() for p in model_params])


def unflatten_master_params(
    model_params: Iterable[th.Tensor], master_params: list[nn.Parameter]
) -> tuple[th.Tensor, ...]:
    """Views of the flat master parameter shaped like `model_params`."""
    return _unflatten_dense_tensors(master_params[0].detach(), list(model_params))


def master_params_to_model_params(
    model_params: Iterable[th.Tensor], master_params: list[nn.Parameter]
) -> None:
    """Copy the master values back into the model (casting to each parameter's dtype)."""
    # A generator would be consumed by unflatten_master_params; make it a list first.
    model_params = list(model_params)
    for param, master in zip(model_params, unflatten_master_params(model_params, master_params)):
        param.detach().copy_(master)


def zero_grad(model_params: Iterable[th.Tensor]) -> None:
    """Zero the gradients in place (keeps the tensors, unlike set_to_none)."""
    for param in model_params:
        if param.grad is not None:
            param.grad.detach_()
            param.grad.zero_()
