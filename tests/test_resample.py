"""Timestep samplers: uniform, and loss-second-moment warm-up, history and weights."""

from __future__ import annotations

import numpy as np
import pytest
import torch as th

from improved_diffusion.resample import (
    LossSecondMomentResampler,
    UniformSampler,
    create_named_schedule_sampler,
)


class FakeDiffusion:
    def __init__(self, num_timesteps: int) -> None:
        self.num_timesteps = num_timesteps


def test_named_samplers():
    d = FakeDiffusion(5)
    assert isinstance(create_named_schedule_sampler("uniform", d), UniformSampler)
    assert isinstance(
        create_named_schedule_sampler("loss-second-moment", d), LossSecondMomentResampler
    )
    with pytest.raises(NotImplementedError):
        create_named_schedule_sampler("importance", d)


def test_uniform_sample_weights_are_one_and_seeded_by_numpy():
    s = UniformSampler(FakeDiffusion(50))
    np.random.seed(0)
    t1, w1 = s.sample(1000, "cpu")
    np.random.seed(0)
    t2, _ = s.sample(1000, "cpu")
    assert th.equal(t1, t2) and t1.dtype == th.int64 and w1.dtype == th.float32
    assert th.equal(w1, th.ones(1000))
    assert t1.min() >= 0 and t1.max() <= 49 and len(th.unique(t1)) == 50


def test_loss_second_moment_warm_up_and_weights():
    T, hist = 4, 3
    s = LossSecondMomentResampler(FakeDiffusion(T), history_per_term=hist, uniform_prob=0.1)
    # Not warmed up until every timestep has `hist` losses: uniform weights.
    for _ in range(hist):
        s.update_with_local_losses(th.tensor([0, 1, 2]), th.tensor([1.0, 2.0, 3.0]))
    assert np.array_equal(s.weights(), np.ones(T))
    s.update_with_local_losses(th.tensor([3, 3]), th.tensor([4.0, 4.0]))
    assert np.array_equal(s.weights(), np.ones(T))
    s.update_with_local_losses(th.tensor([3]), th.tensor([4.0]))  # now full everywhere

    rms = np.array([1.0, 2.0, 3.0, 4.0])
    expected = rms / rms.sum() * 0.9 + 0.1 / T
    w = s.weights()
    assert np.allclose(w, expected) and w.sum() == pytest.approx(1.0)

    # History keeps the last `hist` losses: push two 10s into t=0 -> [1, 10, 10].
    s.update_with_all_losses([0, 0], [10.0, 10.0])
    assert np.allclose(s._loss_history[0], [1.0, 10.0, 10.0])
    rms[0] = np.sqrt((1 + 100 + 100) / 3)
    assert np.allclose(s.weights(), rms / rms.sum() * 0.9 + 0.1 / T)


def test_importance_weights_keep_the_objective_unbiased():
    T = 4
    s = LossSecondMomentResampler(FakeDiffusion(T), history_per_term=1, uniform_prob=0.0)
    s.update_with_all_losses([0, 1, 2, 3], [1.0, 1.0, 2.0, 4.0])
    p = s.weights() / s.weights().sum()
    np.random.seed(1)
    t, w = s.sample(20000, "cpu")
    assert np.allclose(w.numpy(), 1 / (T * p[t.numpy()]), rtol=1e-6)
    freq = np.bincount(t.numpy(), minlength=T) / len(t)
    assert np.allclose(freq, p, atol=0.02)
    # E_p[w * loss] equals the uniform mean of the per-step losses.
    losses = np.array([1.0, 1.0, 2.0, 4.0])
    assert (w.numpy() * losses[t.numpy()]).mean() == pytest.approx(losses.mean(), rel=0.03)
