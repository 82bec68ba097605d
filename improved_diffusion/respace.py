"""Sampling (or training) with a subset of a diffusion process's timesteps."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import numpy as np
import torch as th

from .gaussian_diffusion import GaussianDiffusion


def space_timesteps(num_timesteps: int, section_counts: str | Iterable[int]) -> set[int]:
    """Timesteps to keep from a `num_timesteps`-step process.

    `section_counts` splits the process into equal sections (the first ones one step
    longer when it does not divide evenly) and takes that many evenly strided steps from
    each: e.g. 300 steps with "10,15,20" takes 10 from steps 0-99, 15 from 100-199 and 20
    from 200-299. "ddimN" instead takes the fixed integer stride of the DDIM paper that
    yields exactly N steps (0, s, 2s, ...).
    """
    if isinstance(section_counts, str):
        if section_counts.startswith("ddim"):
            desired_count = int(section_counts[len("ddim") :])
            for stride in range(1, num_timesteps):
                steps = range(0, num_timesteps, stride)
                if len(steps) == desired_count:
                    return set(steps)
            raise ValueError(
                f"cannot create exactly {desired_count} steps from {num_timesteps} "
                "with an integer stride"
            )
        section_counts = [int(x) for x in section_counts.split(",")]
    section_counts = list(section_counts)
    size_per, extra = divmod(num_timesteps, len(section_counts))
    start_idx = 0
    all_steps: list[int] = []
    for i, section_count in enumerate(section_counts):
        size = size_per + (1 if i < extra else 0)
        if size < section_count:
            raise ValueError(f"cannot divide section of {size} steps into {section_count}")
        frac_stride = 1 if section_count <= 1 else (size - 1) / (section_count - 1)
        cur_idx = 0.0
        for _ in range(section_count):
            # Python's round (half to even), as upstream, so the kept steps are identical.
            all_steps.append(start_idx + round(cur_idx))
            cur_idx += frac_stride
        start_idx += size
    return set(all_steps)


class SpacedDiffusion(GaussianDiffusion):
    """A diffusion process that skips steps of a base process.

    Betas are recomputed so that the kept steps have exactly the base process's
    alphas_cumprod; the model still sees the original timestep numbers (through
    _WrappedModel), so a model trained on the full process samples with any spacing.

    :param use_timesteps: timesteps of the original process to keep.
    :param kwargs: GaussianDiffusion's arguments for the base process.
    """

    def __init__(self, use_timesteps: Iterable[int], **kwargs: Any) -> None:
        self.use_timesteps = set(use_timesteps)
        self.timestep_map: list[int] = []
        self.original_num_steps = len(kwargs["betas"])
        # the base process, for samplers that work on its full table (samplers.base_diffusion)
        self.base_betas = np.array(kwargs["betas"], dtype=np.float64)

        base_diffusion = GaussianDiffusion(**kwargs)
        last_alpha_cumprod = 1.0
        new_betas = []
        for i, alpha_cumprod in enumerate(base_diffusion.alphas_cumprod):
            if i in self.use_timesteps:
                new_betas.append(1 - alpha_cumprod / last_alpha_cumprod)
                last_alpha_cumprod = alpha_cumprod
                self.timestep_map.append(i)
        kwargs["betas"] = np.array(new_betas)
        super().__init__(**kwargs)

    def p_mean_variance(self, model, *args, **kwargs):  # type: ignore[override]
        return super().p_mean_variance(self._wrap_model(model), *args, **kwargs)

    def training_losses(self, model, *args, **kwargs):  # type: ignore[override]
        return super().training_losses(self._wrap_model(model), *args, **kwargs)

    def _wrap_model(self, model: Callable[..., th.Tensor]) -> _WrappedModel:
        if isinstance(model, _WrappedModel):
            return model
        return _WrappedModel(
            model, self.timestep_map, self.rescale_timesteps, self.original_num_steps
        )

    def _scale_timesteps(self, t: th.Tensor) -> th.Tensor:
        # The wrapped model maps and scales timesteps itself.
        return t


class _WrappedModel:
    """Calls `model` with spaced indices mapped back to the original timesteps."""

    def __init__(
        self,
        model: Callable[..., th.Tensor],
        timestep_map: list[int],
        rescale_timesteps: bool,
        original_num_steps: int,
    ) -> None:
        self.model = model
        self.timestep_map = timestep_map
        self.rescale_timesteps = rescale_timesteps
        self.original_num_steps = original_num_steps

    def __call__(self, x: th.Tensor, ts: th.Tensor, **kwargs: Any) -> th.Tensor:
        map_tensor = th.tensor(self.timestep_map, device=ts.device, dtype=ts.dtype)
        new_ts = map_tensor[ts]
        if self.rescale_timesteps:
            new_ts = new_ts.float() * (1000.0 / self.original_num_steps)
        return self.model(x, new_ts, **kwargs)

    def parameters(self):
        """The wrapped model's parameters (so sample loops can find the device)."""
        return self.model.parameters()
