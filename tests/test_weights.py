"""Particle weights (fluxrl.guidance.weights): exact values on known inputs, agreement with a
bisection solver, invariances, the floor, and the entropy / KL that temperature tuning reads."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fluxrl.errors import FluxError
from fluxrl.guidance.weights import (
    REWEIGHTS,
    kl_from_uniform,
    linear_weights,
    particle_weights,
    softmax_weights,
    square_weights,
    weight_entropy,
)


def bisect_shift(q: np.ndarray, temp: float, power: int, floor: float = 0.0) -> np.ndarray:
    """Reference solver in float64: the shift c with sum max((q - c) / temp, floor)^power = 1."""
    lo, hi = q.min() - 10 * temp - 10, q.max()
    for _ in range(200):
        c = 0.5 * (lo + hi)
        total = np.sum(np.maximum((q - c) / temp, floor) ** power)
        lo, hi = (c, hi) if total > 1 else (lo, c)
    return np.maximum((q - 0.5 * (lo + hi)) / temp, floor) ** power


@pytest.mark.parametrize("temp, expected", [
    (1.0, [1.0, 0.0, 0.0]),  # only the best particle: c = 3 - 1 = 2
    (4.0, [0.75, 0.25, 0.0]),  # c = (3 + 1 + 0 - 4) / 3 = 0
    (6.0, [11 / 18, 5 / 18, 2 / 18]),  # c = (4 - 6) / 3 = -2 / 3
])
def test_linear_weights_on_known_values(temp, expected):
    w = linear_weights(jnp.array([3.0, 1.0, 0.0]), temp)
    np.testing.assert_allclose(np.asarray(w), expected, atol=1e-6)


def test_square_weights_on_known_values():
    """q = (3, 1, 0), lambda 3: two particles active, c = (4 - sqrt(16 - 2 (10 - 9))) / 2."""
    c = (4 - math.sqrt(14)) / 2
    w = square_weights(jnp.array([3.0, 1.0, 0.0]), 3.0)
    np.testing.assert_allclose(np.asarray(w), [((3 - c) / 3) ** 2, ((1 - c) / 3) ** 2, 0.0], atol=1e-6)
    np.testing.assert_allclose(np.asarray(square_weights(jnp.array([3.0, 1.0, 0.0]), 1.0)),
                               [1.0, 0.0, 0.0], atol=1e-6)


def test_linear_weights_with_a_negative_floor():
    """floor -0.1, N = 3, temp 1: one particle above the floor, c = 3 - (1 + 2 * 0.1) = 1.8."""
    w = linear_weights(jnp.array([3.0, 1.0, 0.0]), 1.0, floor=-0.1)
    np.testing.assert_allclose(np.asarray(w), [1.2, -0.1, -0.1], atol=1e-6)
    with pytest.raises(FluxError, match="floor"):
        linear_weights(jnp.zeros(3), 1.0, floor=0.4)


@pytest.mark.parametrize("how, power", [("linear", 1), ("square", 2)])
@pytest.mark.parametrize("temp", [0.03, 0.3, 3.0])
def test_sorted_solvers_match_bisection(how, power, temp):
    q = np.random.default_rng(int(temp * 100)).normal(size=(5, 64))
    w = np.asarray(particle_weights(jnp.asarray(q, jnp.float32), temp, how))
    ref = np.stack([bisect_shift(row, temp, power) for row in q])
    np.testing.assert_allclose(w, ref, atol=2e-5)
    np.testing.assert_allclose(w.sum(-1), 1.0, atol=1e-5)
    assert (w >= 0).all()


def test_floored_linear_matches_bisection():
    q = np.random.default_rng(3).normal(size=(4, 32))
    w = np.asarray(linear_weights(jnp.asarray(q, jnp.float32), 0.5, floor=-0.01))
    ref = np.stack([bisect_shift(row, 0.5, 1, -0.01) for row in q])
    np.testing.assert_allclose(w, ref, atol=2e-5)
    assert w.min() >= -0.01 - 1e-7


def test_exp_is_softmax_and_dispatch():
    q = jnp.array([[0.0, math.log(3.0)], [1.0, 1.0]])
    np.testing.assert_allclose(np.asarray(softmax_weights(q, 1.0)), [[0.25, 0.75], [0.5, 0.5]],
                               rtol=1e-6)
    np.testing.assert_array_equal(np.asarray(particle_weights(q, 0.7, "exp")),
                                  np.asarray(softmax_weights(q, 0.7)))
    assert REWEIGHTS == ("linear", "exp", "square")
    with pytest.raises(FluxError, match="linear, exp, square"):
        particle_weights(q, 1.0, "cubic")


@pytest.mark.parametrize("how", REWEIGHTS)
def test_weights_ignore_a_shift_and_depend_on_q_over_temp_only(how):
    q = jnp.asarray(np.random.default_rng(1).normal(size=(3, 16)), jnp.float32)
    w = np.asarray(particle_weights(q, 0.2, how))
    np.testing.assert_allclose(np.asarray(particle_weights(q + 5.0, 0.2, how)), w, atol=1e-5)
    if how != "square":  # square weights scale with temp^2 in q units; linear / exp with temp
        np.testing.assert_allclose(np.asarray(particle_weights(3.0 * q, 0.6, how)), w, atol=1e-5)
    # a traced temperature and vmap work the same
    wj = jax.jit(jax.vmap(lambda r, t: particle_weights(r, t, how), in_axes=(0, None)))(q, 0.2)
    np.testing.assert_allclose(np.asarray(wj), w, atol=1e-6)


def test_entropy_and_kl_from_uniform():
    n = 64
    uniform = jnp.full((n,), 1.0 / n)
    one_hot = jnp.zeros(n).at[5].set(1.0)
    assert abs(float(kl_from_uniform(uniform))) < 1e-4
    assert abs(float(weight_entropy(uniform)) - math.log(n)) < 1e-4
    # all mass on one particle: the 1e-6 clamp leaves almost log N
    assert abs(float(kl_from_uniform(one_hot)) - math.log(n)) < 1e-3
    two = jnp.zeros(n).at[:2].set(0.5)
    np.testing.assert_allclose(float(kl_from_uniform(two)), math.log(n / 2), atol=1e-3)
    # negative weights are clamped before the entropy
    assert np.isfinite(float(weight_entropy(jnp.array([1.2, -0.1, -0.1]))))


def test_lower_temperature_means_sharper_weights():
    q = jnp.asarray(np.random.default_rng(2).normal(size=(8, 64)), jnp.float32)
    kls = [float(kl_from_uniform(linear_weights(q, t)).mean()) for t in (0.1, 1.0, 10.0, 1000.0)]
    assert kls == sorted(kls, reverse=True) and kls[-1] < 0.05 and kls[0] > 2.5
