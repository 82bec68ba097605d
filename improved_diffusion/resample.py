"""Timestep samplers for training: uniform, or importance sampling by loss second moment."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence

import numpy as np
import torch as th
import torch.distributed as dist


def create_named_schedule_sampler(name: str, diffusion) -> ScheduleSampler:
    """A "uniform" or "loss-second-moment" sampler over the diffusion's timesteps."""
    if name == "uniform":
        return UniformSampler(diffusion)
    if name == "loss-second-moment":
        return LossSecondMomentResampler(diffusion)
    raise NotImplementedError(f"unknown schedule sampler: {name}")


class ScheduleSampler(ABC):
    """A distribution over timesteps, used to reduce the variance of the objective.

    sample() importance-weights the draws so the expected loss is unchanged.
    """

    @abstractmethod
    def weights(self) -> np.ndarray:
        """Positive (not necessarily normalised) weights, one per diffusion step."""

    def sample(self, batch_size: int, device: th.device | str) -> tuple[th.Tensor, th.Tensor]:
        """Draw `batch_size` timesteps and their importance weights 1 / (T p(t)).

        Uses NumPy's global generator, as upstream, so seeding numpy reproduces the draws.
        """
        w = self.weights()
        p = w / np.sum(w)
        indices_np = np.random.choice(len(p), size=(batch_size,), p=p)
        indices = th.from_numpy(indices_np).long().to(device)
        weights_np = 1 / (len(p) * p[indices_np])
        weights = th.from_numpy(weights_np).float().to(device)
        return indices, weights


class UniformSampler(ScheduleSampler):
    def __init__(self, diffusion) -> None:
        self.diffusion = diffusion
        self._weights = np.ones([diffusion.num_timesteps])

    def weights(self) -> np.ndarray:
        return self._weights


class LossAwareSampler(ScheduleSampler):
    def update_with_local_losses(self, local_ts: th.Tensor, local_losses: th.Tensor) -> None:
        """Update the weights with this rank's timesteps and losses.

        With torch.distributed initialised, every rank's values are gathered first so all
        ranks keep identical weights; a single process updates directly.
        """
        if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
            self.update_with_all_losses(
                [int(t) for t in local_ts.tolist()], [float(x) for x in local_losses.tolist()]
            )
            return
        world = dist.get_world_size()
        batch_sizes = [th.tensor([0], dtype=th.int32, device=local_ts.device) for _ in range(world)]
        dist.all_gather(
            batch_sizes, th.tensor([len(local_ts)], dtype=th.int32, device=local_ts.device)
        )
        sizes = [int(x.item()) for x in batch_sizes]
        max_bs = max(sizes)

        # all_gather needs equal shapes: pad every rank's batch to the largest.
        def padded(x: th.Tensor) -> th.Tensor:
            out = th.zeros(max_bs, dtype=x.dtype, device=x.device)
            out[: len(x)] = x
            return out

        timestep_batches = [th.zeros(max_bs).to(local_ts) for _ in sizes]
        loss_batches = [th.zeros(max_bs).to(local_losses) for _ in sizes]
        dist.all_gather(timestep_batches, padded(local_ts))
        dist.all_gather(loss_batches, padded(local_losses))
        timesteps = [int(x) for y, bs in zip(timestep_batches, sizes) for x in y[:bs].tolist()]
        losses = [float(x) for y, bs in zip(loss_batches, sizes) for x in y[:bs].tolist()]
        self.update_with_all_losses(timesteps, losses)

    @abstractmethod
    def update_with_all_losses(self, ts: Sequence[int], losses: Sequence[float]) -> None:
        """Update the weights from every rank's (timestep, loss) pairs, deterministically."""


class LossSecondMomentResampler(LossAwareSampler):
    """Sample t with probability ~ sqrt(E[loss_t^2]) over the last `history_per_term` losses.

    Uniform until every timestep has a full history; then mixed with `uniform_prob` of
    the uniform distribution so no step is starved.
    """

    def __init__(self, diffusion, history_per_term: int = 10, uniform_prob: float = 0.001) -> None:
        self.diffusion = diffusion
        self.history_per_term = history_per_term
        self.uniform_prob = uniform_prob
        self._loss_history = np.zeros([diffusion.num_timesteps, history_per_term], dtype=np.float64)
        self._loss_counts = np.zeros([diffusion.num_timesteps], dtype=np.int64)

    def weights(self) -> np.ndarray:
        if not self._warmed_up():
            return np.ones([self.diffusion.num_timesteps], dtype=np.float64)
        weights = np.sqrt(np.mean(self._loss_history**2, axis=-1))
        weights /= np.sum(weights)
        weights *= 1 - self.uniform_prob
        weights += self.uniform_prob / len(weights)
        return weights

    def update_with_all_losses(self, ts: Sequence[int], losses: Sequence[float]) -> None:
        for t, loss in zip(ts, losses):
            if self._loss_counts[t] == self.history_per_term:
                # Full: drop the oldest loss.
                self._loss_history[t, :-1] = self._loss_history[t, 1:]
                self._loss_history[t, -1] = loss
            else:
                self._loss_history[t, self._loss_counts[t]] = loss
                self._loss_counts[t] += 1

    def _warmed_up(self) -> bool:
        return bool((self._loss_counts == self.history_per_term).all())
