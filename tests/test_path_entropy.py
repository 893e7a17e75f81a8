"""The chain entropy bound (fluxrl.guidance.path_entropy): noising kernels and reverse stds on
hand-computed cases, agreement with the sampler, and the direction of the bound."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fluxrl.generative import make_model
from fluxrl.guidance.path_entropy import (
    chain_log_ratio,
    gaussian_log_prob,
    noising_log_prob,
    reverse_std,
    stochastic_grid,
    tanh_log_det,
)

LOG_2PI = math.log(2 * math.pi)


def normal_log_prob(x: float, mean: float, var: float) -> float:
    return -0.5 * (x - mean) ** 2 / var - 0.5 * math.log(2 * math.pi * var)


def test_gaussian_log_prob_sums_dimensions():
    x, m, s = jnp.array([[0.5, -1.0]]), jnp.array([0.0, 1.0]), jnp.array([1.0, 2.0])
    want = normal_log_prob(0.5, 0.0, 1.0) + normal_log_prob(-1.0, 1.0, 4.0)
    np.testing.assert_allclose(np.asarray(gaussian_log_prob(x, m, s)), [want], rtol=1e-6)


def test_flow_noising_kernel_and_reverse_std_by_hand():
    """Linear path alpha = 1 - t, sigma = t. From s = 0.25 to t = 0.5: alpha_{t|s} = 2/3,
    sigma_{t|s}^2 = 0.25 - (4/9) 0.0625 = 2/9. Reverse std (eta = 1): 0.25 sqrt(1 - (1/3)^2)."""
    flow = make_model("flow")
    got = noising_log_prob(flow, jnp.array([0.75]), jnp.array([1.0]), jnp.float32(0.25),
                           jnp.float32(0.5))
    np.testing.assert_allclose(float(got), normal_log_prob(1.0, 0.5, 2 / 9), rtol=1e-5)
    c = reverse_std(flow, jnp.float32(0.5), jnp.float32(0.25))
    np.testing.assert_allclose(float(c), 0.25 * math.sqrt(8 / 9), rtol=1e-6)
    np.testing.assert_allclose(float(reverse_std(flow, jnp.float32(0.5), jnp.float32(0.25), 0.5)),
                               0.125 * math.sqrt(8 / 9), rtol=1e-6)


def test_one_step_chain_log_ratio_by_hand():
    """Flow, grid [1, 0.5], one dimension: from t = 1 the noising kernel forgets x_s (N(0, 1)),
    so it cancels the prior N(0, 1) and what is left is the step's mean log density with std
    c = 0.5: -0.5 (1 + log 2 pi) - log 0.5, whatever the chain's values."""
    flow = make_model("flow")
    hist = jnp.array([[[0.4], [-1.3]], [[0.3], [2.0]]])  # [steps + 1, batch 2, dim 1]
    got = chain_log_ratio(flow, hist, jnp.array([1.0, 0.5]))
    want = -0.5 * (1 + LOG_2PI) - math.log(0.5)
    np.testing.assert_allclose(np.asarray(got), [want, want], rtol=1e-5)


def test_stochastic_grid_stops_before_zero():
    vp = make_model("vp-cosine")
    grid = np.asarray(stochastic_grid(vp, 4))
    np.testing.assert_allclose(grid, 0.9946 * np.array([1.0, 0.8, 0.6, 0.4, 0.2]), rtol=1e-6)
    assert grid.shape == (5,) and grid[-1] > 0


def zero_net(p, x, t, c):
    return jnp.zeros_like(x)


def vp_zero_chain(n: int, steps: int = 4):
    """VP cosine (no x0 clipping) with a network that predicts zero noise: every step is
    x_s = (alpha_s / alpha_t) x_t + c z, a linear Gaussian chain."""
    vp = make_model("vp-cosine", clip_denoised=False)
    grid = stochastic_grid(vp, steps)
    x, hist = vp.sample(zero_net, {}, jnp.zeros((n, 1)), jax.random.PRNGKey(0), (n, 1),
                        method="ddpm", eta=1.0, grid=grid, clip=False, return_history=True)
    return vp, grid, x, hist


def test_reverse_std_is_the_samplers_step_noise():
    vp, grid, _, hist = vp_zero_chain(20_000)
    for k in range(len(grid) - 1):
        a_t, _ = vp.alpha_sigma(grid[k])
        a_s, _ = vp.alpha_sigma(grid[k + 1])
        resid = np.asarray(hist[k + 1] - (a_s / a_t) * hist[k])
        c = float(reverse_std(vp, grid[k], grid[k + 1]))
        assert abs(resid.std() / c - 1) < 0.03, (k, resid.std(), c)


def test_bound_is_below_the_true_entropy_of_a_gaussian_chain():
    """The zero-noise-prediction chain ends in N(0, v) with v known by recursion; the bound
    -E[log-ratio] must not exceed 0.5 log(2 pi e v) (Monte Carlo, 20K chains)."""
    vp, grid, x, hist = vp_zero_chain(20_000)
    v = float(vp.alpha_sigma(grid[0])[1]) ** 2
    for k in range(len(grid) - 1):
        r = float(vp.alpha_sigma(grid[k + 1])[0] / vp.alpha_sigma(grid[k])[0])
        v = r**2 * v + float(reverse_std(vp, grid[k], grid[k + 1])) ** 2
    true_h = 0.5 * math.log(2 * math.pi * math.e * v)
    lr = np.asarray(chain_log_ratio(vp, hist, grid))
    bound, se = -lr.mean(), lr.std() / math.sqrt(lr.size)
    assert np.isfinite(lr).all() and abs(float(x.std()) ** 2 / v - 1) < 0.03
    assert bound < true_h + 3 * se, (bound, true_h)


@pytest.mark.parametrize("x", [-3.0, -0.2, 0.0, 1.1, 30.0])
def test_tanh_log_det(x):
    got = float(tanh_log_det(jnp.array([x])))
    want = math.log(1 - math.tanh(x) ** 2) if abs(x) < 5 else 2 * (math.log(2) - abs(x))
    np.testing.assert_allclose(got, want, rtol=1e-4)
