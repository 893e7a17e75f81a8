"""The Gaussian distributional critic (fluxrl.nets.distributional): shapes, the clipped return
sample, the per-transition ensemble reduction, and DSAC-T's loss and gradients on known inputs."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fluxrl.errors import FluxError
from fluxrl.nets.backbones import make_backbone
from fluxrl.nets.distributional import (
    GaussianQEnsemble,
    dsac_critic_loss,
    huber,
    reduce_returns,
    sample_returns,
)


def test_ensemble_shapes_and_positive_std():
    net = GaussianQEnsemble(make_backbone("mlp", 16, 2, "relu", False), 3)
    obs, act = jnp.ones((5, 4)), jnp.zeros((5, 2))
    params = net.init(jax.random.PRNGKey(0), obs, act)
    mean, std = net.apply(params, obs, act)
    assert mean.shape == std.shape == (3, 5) and bool(jnp.all(std > 0))
    assert not np.allclose(np.asarray(mean[0]), np.asarray(mean[1]))  # independent members


def test_sampled_returns_are_clipped_at_three_std():
    mean, std = jnp.full((20000,), 2.0), jnp.full((20000,), 0.5)
    z = (np.asarray(sample_returns(jax.random.PRNGKey(0), mean, std)) - 2.0) / 0.5
    assert np.abs(z).max() <= 3.0 + 1e-5 and np.sum(np.abs(z) >= 3.0 - 1e-5) > 10
    assert abs(z.mean()) < 0.03 and abs(z.std() - 1.0) < 0.02


def test_min_reduction_takes_the_sample_of_the_member_with_the_smaller_mean():
    mean = jnp.array([[1.0, 5.0, 2.0], [3.0, 4.0, 2.5], [0.5, 6.0, 9.0]])
    sample = jnp.array([[10.0, 11.0, 12.0], [20.0, 21.0, 22.0], [30.0, 31.0, 32.0]])
    m, s = reduce_returns(mean, sample, "min")
    np.testing.assert_array_equal(np.asarray(m), [0.5, 4.0, 2.0])
    np.testing.assert_array_equal(np.asarray(s), [30.0, 21.0, 12.0])
    m, s = reduce_returns(mean, sample, "mean")
    np.testing.assert_allclose(np.asarray(m), np.asarray(mean).mean(0))
    np.testing.assert_allclose(np.asarray(s), [20.0, 21.0, 22.0])
    with pytest.raises(FluxError, match="min, mean"):
        reduce_returns(mean, sample, "max")


def test_huber():
    x = jnp.array([-60.0, -2.0, 0.5, 50.0, 70.0])
    np.testing.assert_allclose(np.asarray(huber(x, 50.0)),
                               [50 * 35, 2.0, 0.125, 1250.0, 50 * 45], rtol=1e-6)


def test_dsac_loss_value_and_gradients_on_known_inputs():
    """Two members, four transitions. With s = max(std, 1e-6), y = mean + clip(sampled target -
    mean, +-3 rho), w = clip(rho^2 / (s^2 + 0.1), 0.1, 10): loss = mean w (huber(mean - target) +
    std (s^2 - (y - mean)^2 / 2) / (s + 0.1)); d/dmean = w (mean - target) / B (inside the Huber
    band), d/dstd = w (s^2 - (y - mean)^2 / 2) / (s + 0.1) / B; targets and rho get no gradient."""
    mean = np.array([[0.0, 1.0, -2.0, 3.0], [0.5, 0.5, 0.5, 100.0]], np.float32)
    std = np.array([[0.1, 1.0, 2.0, 0.5], [1e-9, 0.3, 0.7, 1.0]], np.float32)
    t_mean = np.array([1.0, 0.0, -1.0, 2.0], np.float32)
    t_sample = np.array([1.5, -4.0, 0.0, 2.5], np.float32)
    rho = np.float32(0.8)

    s = np.maximum(std, 1e-6)
    y = mean + np.clip(t_sample - mean, -3 * rho, 3 * rho)
    w = np.clip(rho**2 / (s**2 + 0.1), 0.1, 10.0)
    resid = mean - t_mean
    hub = np.where(np.abs(resid) <= 50, 0.5 * resid**2, 50 * (np.abs(resid) - 25))
    want = np.mean(w * (hub + std * (s**2 - 0.5 * (y - mean) ** 2) / (s + 0.1)), -1)

    args = [jnp.asarray(v) for v in (mean, std, t_mean, t_sample, rho)]
    np.testing.assert_allclose(np.asarray(dsac_critic_loss(*args)), want, rtol=1e-5)

    grads = jax.grad(lambda *a: dsac_critic_loss(*a).sum(), argnums=(0, 1, 2, 3, 4))(*args)
    dmean = w * np.clip(resid, -50, 50) / 4
    dstd = w * (s**2 - 0.5 * (y - mean) ** 2) / (s + 0.1) / 4
    np.testing.assert_allclose(np.asarray(grads[0]), dmean, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(np.asarray(grads[1]), dstd, rtol=1e-5, atol=1e-7)
    for g in grads[2:]:
        np.testing.assert_array_equal(np.asarray(g), 0.0)
