"""Reverse sampling: clean-action candidates for a noisy action under a uniform reference policy.

For a Gaussian path ``x_t = alpha_t x0 + sigma_t eps`` and a uniform prior on the action box
``[low, high]^A``, the posterior of the clean action given ``x_t`` is a truncated Gaussian,
``x0 | x_t ~ N(x_t / alpha_t, (sigma_t / alpha_t)^2)`` restricted to the box, independently per
dimension. Drawing ``n`` candidates from it and weighting them by ``exp(Q / lambda)`` (self-normalised
over the candidates) turns them into draws from the posterior of ``pi* ~ Unif * exp(Q / lambda)``,
so the weighted denoising target at ``x_t`` estimates ``pi*``'s: the "reverse sampling" of SDAC
(Ma et al. 2025, arXiv 2502.00361) and MaxEntDP-style maximum-entropy diffusion policies.

- :func:`truncated_normal`: standard normal samples restricted to ``[lower, upper]``, by the inverse
  CDF evaluated on the side of zero where it is accurate (so intervals far in a tail are sampled
  correctly; ``jax.random.truncated_normal`` works with ``erf`` and collapses there), from fused
  uniform bits (:func:`fluxrl.rng.uniform`);
- :func:`reverse_sample`: ``n`` candidate pairs ``(x0, eps)`` per noisy sample with ``x_t = alpha
  x0 + sigma eps``;
- :func:`candidate_loss`: a generative model's regression loss at ``(x_t, t)`` against the targets
  of several candidates, weighted per candidate (the network runs once per noisy sample).

Pure functions for any model of :mod:`fluxrl.generative` (noise, velocity or preconditioned x0
prediction).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
from jax.scipy.special import ndtr, ndtri

from fluxrl.generative.base import GenerativeModel, as_network, bcast
from fluxrl.rng import uniform

Array = jax.Array

#: Below this width (in standard deviations) the truncated normal is sampled as a uniform on the
#: interval: its density varies by less than ``exp(|bound| * width)`` across it.
NARROW = 1e-3


def _truncated_from_uniform(u: Array, lower: Array, upper: Array) -> Array:
    """Inverse-CDF map of uniforms ``u`` to N(0, 1) restricted to ``[lower, upper]`` (which
    broadcast against ``u``; the CDF is evaluated at their own shape).

    Intervals whose centre is above zero are mirrored, so the CDF is always evaluated where it is
    small and ``ndtr`` keeps its relative precision; when the interval's mass is below float
    resolution the result is the end nearest zero (the truncated normal's limit far in a tail)."""
    flip = lower + upper > 0
    lo = jnp.where(flip, -upper, lower)
    hi = jnp.where(flip, -lower, upper)
    c_lo, c_hi = ndtr(lo), ndtr(hi)
    z = jnp.clip(ndtri(c_lo + u * (c_hi - c_lo)), lo, hi)
    z = jnp.where(c_hi > c_lo, z, hi)
    return jnp.where(flip, -z, z)


def truncated_normal(key: Array, lower: Array, upper: Array, shape: Sequence[int]) -> Array:
    """Standard normal samples of ``shape`` restricted to ``[lower, upper]`` (both broadcast
    against ``shape``; infinite bounds allowed)."""
    lower, upper = jnp.asarray(lower, jnp.float32), jnp.asarray(upper, jnp.float32)
    return _truncated_from_uniform(uniform(key, tuple(shape)), lower, upper)


def reverse_sample(model: GenerativeModel, key: Array, x_t: Array, t: Array, n: int,
                   low: float = -1.0, high: float = 1.0) -> tuple[Array, Array]:
    """``n`` draws per noisy sample from ``x0 | x_t`` under a uniform prior on ``[low, high]``.

    ``x_t [..., A]``, ``t [...]``; returns ``(x0, eps)``, each ``[..., n, A]``, with ``x_t = alpha_t
    x0 + sigma_t eps`` (up to rounding) and ``x0`` in the box. In the noise's terms, ``-eps`` is a
    standard normal truncated to ``[(low alpha - x_t) / sigma, (high alpha - x_t) / sigma]`` and
    ``x0 = (x_t - sigma eps) / alpha`` (flow-rl ``agent/online/sdac.py``). Where the box spans less
    than :data:`NARROW` posterior standard deviations (alpha near 0, e.g. flow matching at ``t ->
    1``) the posterior is the uniform prior to that accuracy, and ``x0`` is drawn from it directly
    (with ``eps`` from the identity), which float32 could not resolve through ``eps``."""
    alpha, sigma = model.alpha_sigma(jnp.asarray(t, x_t.dtype))
    alpha = bcast(jnp.maximum(alpha, 1e-20), x_t)[..., None, :]
    sigma = bcast(jnp.maximum(sigma, 1e-20), x_t)[..., None, :]
    xt = x_t[..., None, :]
    lower, upper = (low * alpha - xt) / sigma, (high * alpha - xt) / sigma
    shape = x_t.shape[:-1] + (n, x_t.shape[-1])
    u = uniform(key, shape)
    z = _truncated_from_uniform(u, lower, upper)
    narrow = upper - lower < NARROW
    x0 = jnp.where(narrow, low + (high - low) * u, jnp.clip((xt + sigma * z) / alpha, low, high))
    eps = jnp.where(narrow, (xt - alpha * x0) / sigma, -z)
    return x0, eps


def candidate_loss(model: GenerativeModel, apply: Any, params: Any, x_t: Array, t: Array,
                   cond: Array, x0: Array, eps: Array, weights: Array) -> Array:
    """Weighted regression of the model's prediction at ``(x_t [..., A], t [...])`` on the targets
    of candidates ``(x0, eps) [..., n, A]``: ``sum_n weights[..., n] mean_A (out - target_n)^2``,
    per sample ``[...]``. ``target_n = model.join(x0_n, eps_n, t)`` (noise, velocity or x0); a
    preconditioned model (EDM) regresses its raw network on ``(target - c_skip x_t) / c_out``, as
    its own loss does. With weights summing to 1 this is the squared distance to the weighted
    mean target plus a constant (the targets' weighted variance), so the gradient is that of
    regressing on the weighted mean. ``weights`` are used as given (stop their gradient first)."""
    net = as_network(apply)
    c, e = net.embed_cond(params, cond), net.embed_time(params, model.time_input(t))
    target = model.join(x0, eps, bcast(t, x0))
    pre = model.precondition(t)
    if pre is None:
        out = net.head(params, x_t, c, e)
    else:
        c_in, c_skip, c_out = pre
        out = net.head(params, bcast(c_in, x_t) * x_t, c, e)
        target = (target - bcast(c_skip, x0) * x_t[..., None, :]) / bcast(c_out, x0)
    sq = jnp.mean((out[..., None, :] - target) ** 2, axis=-1)
    return jnp.sum(weights * sq, axis=-1)
