"""Monte Carlo score of a noised energy-based target: the Denoising Energy Matching estimator
(Akhound-Sadegh et al. 2024, arXiv 2402.06121, eq. 8-9) for the uniform reference on the action box.

Target ``p0(a) ~ 1_box(a) exp(Q(a) / lambda)`` (energy ``-Q / lambda``), noised along a Gaussian
path ``x_t = alpha_t a + sigma_t eps``: ``p_t(x_t) = int N(x_t; alpha_t a, sigma_t^2) p0(a) da``.
Substituting ``a = (x_t + sigma_t z) / alpha_t`` writes ``p_t`` as an expectation of ``exp(Q(a) /
lambda)`` over ``a ~ N(x_t / alpha_t, (sigma_t / alpha_t)^2)``, whose ``x_t``-gradient is

    grad log p_t(x_t) ~ sum_k w_k grad_a Q(a_k) / (lambda alpha_t),  w = softmax(Q(a_k) / lambda),

with ``K`` candidates ``a_k`` drawn from that Gaussian restricted to the box
(:func:`fluxrl.guidance.reverse_sampling.reverse_sample`). The restriction's own dependence on
``x_t`` (a boundary term) is left out, as in flow-rl ``agent/online/idem.py``; it vanishes when
``exp(Q / lambda)`` is negligible on the box's faces. The estimator is consistent as ``K -> inf``
and biased (self-normalised) at finite ``K``.

**Normalised form** (``normalize=True``, flow-rl ``agent/online/idem.py`` at bae22f4 and b1385e0,
``jit_update_idem_actor``: ``scale = mean|grad Q| + 1e-6``, then ``q_grad / temp / scale`` and
``softmax(q_value / temp / scale)``): both the values and the gradients are divided by one scalar
``s = mean |grad_a Q(a_k)| + 1e-6``, taken over every candidate, state and action dimension of the
batch. That is the estimator above at the effective temperature ``lambda s``: the target no longer
depends on the scale of Q (multiplying Q by any constant leaves the weights and the score
unchanged), and ``lambda`` is measured in units of the batch's typical action gradient. Without it
the weights collapse to one candidate and the score grows like ``|grad Q| / lambda`` as Q's scale
grows (``benchmarks/idem_scale.py`` measures both: ``benchmarks/results/idem-scale.md``).

- :func:`dem_score`: the estimator on given candidate values and gradients;
- :func:`energy_score`: draws the candidates and values all of them, with their action gradients,
  in one batched critic call.

Both results are constants (``stop_gradient``): they are regression targets, never a path for
gradients into the critic. Usable wherever a Q-guided score at an intermediate noise level is
needed (iDEM's denoising target; importance-sampled guidance while sampling).
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

from fluxrl.generative.base import GenerativeModel, bcast
from fluxrl.guidance.reverse_sampling import reverse_sample
from fluxrl.guidance.weights import softmax_weights

Array = jax.Array


def dem_score(q: Array, grad_q: Array, temperature: float | Array, alpha: Array) -> Array:
    """``sum_k softmax(q / lambda)_k grad_q_k / (lambda alpha)``: ``q [..., K]``, ``grad_q [..., K,
    A]``, ``alpha [...]`` (the path's ``alpha_t`` per noisy sample) -> ``[..., A]``. The softmax is
    taken in log space (shift-invariant, no overflow for large ``q / lambda``)."""
    w = softmax_weights(q, temperature)
    mean_grad = jnp.einsum("...k,...ka->...a", w, grad_q)
    return jax.lax.stop_gradient(mean_grad / (temperature * bcast(alpha, mean_grad)))


def energy_score(model: GenerativeModel, key: Array, x_t: Array, t: Array,
                 value: Callable[..., Array], num_samples: int,
                 temperature: float | Array, low: float = -1.0,
                 high: float = 1.0, per_state: tuple[Array, ...] = (),
                 block: int = 0, normalize: bool = False) -> tuple[Array, dict]:
    """DEM estimate of ``grad log p_t(x_t)`` for ``p0 ~ Unif([low, high]^A) exp(Q / lambda)``.

    ``x_t [..., A]``, ``t [...]`` with ``alpha_t > 0`` (the estimate scales as ``1 / alpha_t``);
    ``value(a [..., K, A], *per_state) -> [..., K]`` is the (reduced) critic at the candidates,
    with ``per_state`` arrays (e.g. the states, ``[B, obs]``) passed through. One forward and one
    input-gradient pass over all ``[..., K]`` candidates; with ``block > 0`` and one batch axis
    (``x_t [B, A]``) the pass runs over ``max(1, block // K)`` states at a time
    (:func:`fluxrl.nets.blocked.map_blocks`: the same numbers, in cache-sized pieces). With
    ``normalize`` the temperature is multiplied by ``s = mean |grad_a Q| + 1e-6`` over all
    candidates (the normalised form of the module docstring). Returns the score ``[..., A]`` and
    ``{"candidates", "q", "weights", "scale"}`` (``[..., K, A]``, ``[..., K]``, ``[..., K]``, the
    scalar ``s``, 1 without ``normalize``)."""
    from fluxrl.nets.blocked import map_blocks

    a0, _ = reverse_sample(model, key, x_t, t, num_samples, low, high)
    a0 = jax.lax.stop_gradient(a0)

    def value_and_grad(a: Array, *ps: Array) -> tuple[Array, Array]:
        def total(a: Array) -> tuple[Array, Array]:
            q = value(a, *ps)
            return q.sum(), q

        return jax.grad(total, has_aux=True)(a)

    states = max(1, block // num_samples) if block > 0 and x_t.ndim == 2 else x_t.shape[0]
    grad_q, q = map_blocks(value_and_grad, a0, *per_state, block=states)
    q, grad_q = jax.lax.stop_gradient(q), jax.lax.stop_gradient(grad_q)
    alpha = model.alpha_sigma(jnp.asarray(t, x_t.dtype))[0]
    scale = jnp.abs(grad_q).mean() + 1e-6 if normalize else jnp.ones((), grad_q.dtype)
    lam = temperature * scale
    score = dem_score(q, grad_q, lam, alpha)
    return score, {"candidates": a0, "q": q, "weights": softmax_weights(q, lam), "scale": scale}
