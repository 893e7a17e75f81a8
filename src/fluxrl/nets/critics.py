"""Q-function ensembles of any size with min / mean aggregation, written once for every agent."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from fluxrl.errors import FluxError


class QHead(nn.Module):
    """Q(s, a): concatenate, run the backbone, project to a scalar."""

    backbone: nn.Module

    @nn.compact
    def __call__(self, obs: jax.Array, action: jax.Array) -> jax.Array:
        x = self.backbone(jnp.concatenate([obs, action], axis=-1))
        return nn.Dense(1)(x)[..., 0]


class QEnsemble(nn.Module):
    """``num`` independent Q-networks evaluated as one batched computation: output ``[num, ...]``."""

    backbone: nn.Module
    num: int = 2

    @nn.compact
    def __call__(self, obs: jax.Array, action: jax.Array) -> jax.Array:
        ens = nn.vmap(QHead, variable_axes={"params": 0}, split_rngs={"params": True},
                      in_axes=None, out_axes=0, axis_size=self.num)
        return ens(self.backbone)(obs, action)


AGGREGATIONS = ("min", "mean")


def aggregate(q: jax.Array, how: str) -> jax.Array:
    """Reduce the ensemble axis (first) with ``min`` (clipped double Q) or ``mean``."""
    if how == "min":
        return jnp.min(q, axis=0)
    if how == "mean":
        return jnp.mean(q, axis=0)
    raise FluxError(f"unknown critic aggregation {how!r}; choose one of: {', '.join(AGGREGATIONS)}")
