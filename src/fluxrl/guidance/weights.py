"""Weights over particles: how weighted-matching methods turn the critic's values of N candidate
actions per state into a distribution over those candidates.

Every function takes values ``q [..., N]`` (e.g. Q of N sampled actions) and a temperature
``lambda > 0`` (a Python float or a traced scalar) and returns weights ``[..., N]`` that are
non-negative (up to ``floor``) and sum to 1 along the last axis:

- ``exp``: ``softmax(q / lambda)``, the KL-regularised optimum ``nu exp(Q / lambda)`` on particles
  drawn from ``nu`` (SDAC, QVPO, DPMD's ``exp`` variant);
- ``linear``: ``max((q - c) / lambda, floor)`` with the shift ``c`` chosen so the weights sum to 1,
  i.e. the Euclidean projection of ``q / lambda`` onto the simplex (sparsemax, Martins & Astudillo
  2016) when ``floor = 0``; particles below the shift get no weight (DPMD's linear advantage
  reweighting, flow-rl ``agent/online/dpmd.py`` ``solve_normalizer_linear``);
- ``square``: ``max((q - c) / lambda, 0) ** 2`` normalised the same way (flow-rl ``dpmd.py``
  ``solve_normalizer_square``).

:func:`weight_entropy` and :func:`kl_from_uniform` measure how far the weights are from uniform,
the quantity a KL-constrained temperature is tuned on (DPMD: ``KL(w || uniform) = log N - H(w)``).
:func:`top_advantages` keeps only the best ``k`` particles, weighted by their advantage over the
particles' mean (QVPO; no temperature, not normalised).
Pure functions, differentiable where the maths is.
"""

from __future__ import annotations

import math
from numbers import Real

import jax
import jax.numpy as jnp

from fluxrl.errors import FluxError

Array = jax.Array

#: Names accepted by :func:`particle_weights`.
REWEIGHTS = ("linear", "exp", "square")


def softmax_weights(q: Array, temperature: float | Array) -> Array:
    """``softmax(q / lambda)`` along the last axis."""
    return jax.nn.softmax(q / temperature, axis=-1)


def _sorted_sums(q: Array) -> tuple[Array, Array, Array, Array]:
    """``q`` minus its maximum (the weights ignore a shift; this keeps float32 sums accurate),
    that sorted in decreasing order, its running sums, and ``k = 1..N``."""
    q = q - jnp.max(q, axis=-1, keepdims=True)
    q_desc = -jnp.sort(-q, axis=-1)
    k = jnp.arange(1, q.shape[-1] + 1, dtype=q.dtype)
    return q, q_desc, jnp.cumsum(q_desc, axis=-1), k


def linear_weights(q: Array, temperature: float | Array, floor: float = 0.0) -> Array:
    """``w = max((q - c) / lambda, floor)`` with ``sum(w) = 1``, ``c`` found exactly by sorting.

    With ``k`` particles above the floor, ``sum_{top k} (q_i - c) = lambda (1 - (N - k) floor)``;
    the ``k``-th largest value belongs to that set iff ``sum_{i <= k} (q_i - q_(k)) <= lambda (1 -
    N floor)``, a condition monotone in ``k``. ``floor`` may be negative (bad particles then push
    the fit away); it must satisfy ``N floor < 1``."""
    n = q.shape[-1]
    if isinstance(floor, Real) and not floor * n < 1:
        raise FluxError(f"linear weights need floor * N < 1 so that the weights can sum to 1, "
                        f"got floor={floor} with N={n}")
    q, q_desc, csum, k = _sorted_sums(q)
    active = csum - k * q_desc <= temperature * (1.0 - n * floor)
    k_act = jnp.maximum(jnp.sum(active, axis=-1, keepdims=True), 1)
    s_act = jnp.take_along_axis(csum, k_act - 1, axis=-1)
    shift = (s_act - temperature * (1.0 - (n - k_act) * floor)) / k_act
    return jnp.maximum((q - shift) / temperature, floor)


def square_weights(q: Array, temperature: float | Array) -> Array:
    """``w = max((q - c) / lambda, 0) ** 2`` with ``sum(w) = 1``: ``c`` is the smaller root of
    ``sum_{top k} (q_i - c)^2 = lambda^2`` for the largest consistent ``k``."""
    q, q_desc, csum, k = _sorted_sums(q)
    csum2 = jnp.cumsum(q_desc**2, axis=-1)
    active = csum2 - 2.0 * csum * q_desc + k * q_desc**2 <= temperature**2
    k_act = jnp.maximum(jnp.sum(active, axis=-1, keepdims=True), 1)
    s1 = jnp.take_along_axis(csum, k_act - 1, axis=-1)
    s2 = jnp.take_along_axis(csum2, k_act - 1, axis=-1)
    disc = jnp.maximum(s1**2 - k_act * (s2 - temperature**2), 0.0)
    shift = (s1 - jnp.sqrt(disc)) / k_act
    return jnp.maximum((q - shift) / temperature, 0.0) ** 2


def particle_weights(q: Array, temperature: float | Array, how: str = "linear",
                     floor: float = 0.0) -> Array:
    """Weights ``[..., N]`` summing to 1 by one of :data:`REWEIGHTS` (``floor``: ``linear`` only)."""
    if how == "exp":
        return softmax_weights(q, temperature)
    if how == "linear":
        return linear_weights(q, temperature, floor)
    if how == "square":
        return square_weights(q, temperature)
    raise FluxError(f"unknown particle reweighting {how!r}; choose one of: {', '.join(REWEIGHTS)}")


def weight_entropy(w: Array, eps: float = 1e-6) -> Array:
    """Shannon entropy of the weights along the last axis, after clamping them to at least ``eps``
    and renormalising (so zero and negative weights are allowed); ``log`` is taken of ``p + eps``
    (flow-rl ``dpmd.py``)."""
    p = jnp.maximum(w, eps)
    p = p / jnp.sum(p, axis=-1, keepdims=True)
    return -jnp.sum(p * jnp.log(p + eps), axis=-1)


def kl_from_uniform(w: Array, eps: float = 1e-6) -> Array:
    """``KL(w || uniform) = log N - H(w)`` along the last axis: 0 for uniform weights, ``log N``
    for all mass on one particle."""
    return math.log(w.shape[-1]) - weight_entropy(w, eps)


def top_advantages(q: Array, k: int = 1) -> tuple[Array, Array]:
    """The ``k`` best particles and their advantages: ``q [..., N] -> (indices [..., k], max(q_i -
    mean(q), 0) [..., k])``, best first (ties go to the lower index). The mean over the particles
    is the value baseline ``V(s)``; the advantage of the best is never negative, of the others it
    is clamped at 0 (QVPO, Ding et al. 2024: ``qadv`` of the authors' code, flow-rl
    ``agent/online/qvpo.py`` ``reweight=adv`` with ``k = 1``)."""
    if not 1 <= k <= q.shape[-1]:
        raise FluxError(f"top_advantages needs 1 <= k <= N = {q.shape[-1]}, got k={k}")
    top, idx = jax.lax.top_k(q, k)
    return idx, jnp.maximum(top - jnp.mean(q, axis=-1, keepdims=True), 0.0)
