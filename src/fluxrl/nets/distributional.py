"""Gaussian distributional critics (DSAC-T, Duan et al. 2023, arXiv 2310.05858), as DACER and its
successors use them: each ensemble member predicts the mean and standard deviation of the return
``Z(s, a) ~ N(Q(s, a), sigma(s, a)^2)`` and is trained on a sampled bootstrap return.

The loss is flow-rl's ``agent/online/dacer.py`` form of DSAC-T's refinements: the mean regresses on
the expected target with a Huber loss, the std on a sampled target clipped to ``mean +- 3 rho``
(``rho``: a running mean of the predicted std), and both terms are scaled by ``rho^2 /
(sigma^2 + 0.1)`` (clipped to [0.1, 10]) to keep the gradient size independent of the return scale.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from fluxrl.errors import FluxError

Array = jax.Array
REDUCTIONS = ("min", "mean")


class GaussianQHead(nn.Module):
    """``(mean, std)`` of the return: backbone on ``[obs, action]``, Dense(2), softplus on the std
    (flow-rl ``GaussianCritic``)."""

    backbone: nn.Module

    @nn.compact
    def __call__(self, obs: Array, action: Array) -> tuple[Array, Array]:
        out = nn.Dense(2)(self.backbone(jnp.concatenate([obs, action], axis=-1)))
        return out[..., 0], jax.nn.softplus(out[..., 1])


class GaussianQEnsemble(nn.Module):
    """``num`` independent Gaussian critics in one batched computation: ``(mean, std)``, each
    ``[num, ...]``."""

    backbone: nn.Module
    num: int = 2

    @nn.compact
    def __call__(self, obs: Array, action: Array) -> tuple[Array, Array]:
        ens = nn.vmap(GaussianQHead, variable_axes={"params": 0}, split_rngs={"params": True},
                      in_axes=None, out_axes=0, axis_size=self.num)
        return ens(self.backbone)(obs, action)


def sample_returns(key: Array, mean: Array, std: Array, clip: float = 3.0) -> Array:
    """``mean + std z`` with ``z ~ N(0, 1)`` clipped to ``[-clip, clip]`` (DSAC-T; flow-rl
    ``q_evaluate``)."""
    return mean + std * jnp.clip(jax.random.normal(key, mean.shape, mean.dtype), -clip, clip)


def reduce_returns(mean: Array, sample: Array, how: str) -> tuple[Array, Array]:
    """Reduce the ensemble axis (first) of the predicted means and sampled returns. ``min``: the
    smallest mean and the sample of the member that predicts it, per state-action (DSAC-T's
    clipped double Q); ``mean``: both averaged over members."""
    if how == "min":
        pick = jnp.argmin(mean, axis=0)[None]
        return (jnp.take_along_axis(mean, pick, 0)[0], jnp.take_along_axis(sample, pick, 0)[0])
    if how == "mean":
        return mean.mean(0), sample.mean(0)
    raise FluxError(f"unknown critic aggregation {how!r}; choose one of: {', '.join(REDUCTIONS)}")


def huber(x: Array, delta: float) -> Array:
    """Huber loss of a residual: ``x^2 / 2`` inside ``|x| <= delta``, linear outside."""
    a = jnp.abs(x)
    return jnp.where(a <= delta, 0.5 * x**2, delta * (a - 0.5 * delta))


def dsac_critic_loss(mean: Array, std: Array, target_mean: Array, target_sample: Array,
                     running_std: Array, bound: float = 3.0, bias: float = 0.1,
                     delta: float = 50.0) -> Array:
    """Per-member loss of a Gaussian critic ``(mean, std) [E, B]`` against the expected target
    ``target_mean [B]`` and a sampled target ``target_sample [B]`` (both constants): ``[E]``.

    With ``rho`` = ``running_std``, ``s`` = stop_gradient(max(std, 1e-6)) and ``y`` = the sampled
    target clipped to ``mean +- bound rho``::

        w = clip(rho^2 / (s^2 + bias), 0.1, 10)
        loss = mean_B w (huber(mean - target_mean) + std (s^2 - huber(y - mean)) / (s + bias))

    so ``d loss / d mean`` is the Huber gradient toward the expected target and ``d loss / d std``
    is ``w (s^2 - (y - mean)^2 / 2) / (s + bias)`` (flow-rl ``jit_update_dacer``)."""
    rho = jax.lax.stop_gradient(running_std)
    target_mean, target_sample = jax.lax.stop_gradient((target_mean, target_sample))
    mean_sg = jax.lax.stop_gradient(mean)
    y = mean_sg + jnp.clip(target_sample - mean_sg, -bound * rho, bound * rho)
    s = jax.lax.stop_gradient(jnp.maximum(std, 1e-6))
    w = jnp.clip(rho**2 / (s**2 + bias), 0.1, 10.0)
    mean_term = huber(mean - target_mean, delta)
    std_term = std * (s**2 - huber(mean_sg - y, delta)) / (s + bias)
    return jnp.mean(w * (mean_term + std_term), axis=-1)
