"""Backbones shared by actors and critics: MLP, SimBa and BroNet, in one registry.

``width`` is the hidden size; ``depth`` is the number of hidden layers (MLP) or residual blocks
(SimBa, BroNet).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import flax.linen as nn
import jax
import jax.numpy as jnp

from fluxrl.errors import FluxError, close_matches


class NetSpec(Protocol):
    """What :func:`backbone_from` reads (``fluxrl.agents.config.NetConfig`` has these fields)."""

    backbone: str
    width: int
    depth: int
    act: str
    layer_norm: bool

@jax.custom_jvp
def mish(x: jax.Array) -> jax.Array:
    """Mish (Misra 2019), ``x tanh(softplus(x))``, computed with one exponential: with ``n = e^x
    (e^x + 2)``, ``tanh(log(1 + e^x)) = n / (n + 2)``. Same function as the textbook form (to
    float32 rounding, and exactly ``x`` above 20), but one transcendental instead of three, which
    matters because a diffusion actor's Mish layers run at every denoising step.

    Its derivative is a hand-written rule, ``n / (n + 2) + x 4 e (e + 1) / (n + 2)^2``: reverse
    mode then keeps one array per layer and multiplies once, where the differentiated formula
    kept several and ran about 3x slower through a 20-step chain on CPU."""
    e = jnp.exp(jnp.minimum(x, 20.0))
    n = e * (e + 2.0)
    return x * (n / (n + 2.0))  # n / (n + 2) rounds to exactly 1 from x = 20 on


@mish.defjvp
def _mish_jvp(primals: tuple, tangents: tuple) -> tuple[jax.Array, jax.Array]:
    (x,), (dx,) = primals, tangents
    xc = jnp.minimum(x, 20.0)  # from 20 on the second term is below float32 resolution of 1
    e = jnp.exp(xc)
    n = e * (e + 2.0)
    d = n + 2.0
    tsp = n / d
    return x * tsp, (tsp + xc * 4.0 * e * (e + 1.0) / (d * d)) * dx


ACTIVATIONS: dict[str, Callable[[jax.Array], jax.Array]] = {
    "relu": nn.relu,
    "elu": nn.elu,
    "mish": mish,
    "silu": nn.silu,
    "gelu": nn.gelu,
    "tanh": jnp.tanh,
}


def activation(name: str) -> Callable[[jax.Array], jax.Array]:
    """Look up an activation by name; unknown names are a :class:`FluxError`."""
    if name not in ACTIVATIONS:
        raise FluxError(f"unknown activation {name!r}; {close_matches(name, ACTIVATIONS)}")
    return ACTIVATIONS[name]


class Backbone(nn.Module):
    """Fields every backbone shares: hidden ``width``, ``depth``, activation name, LayerNorm."""

    width: int
    depth: int
    act: str = "relu"
    layer_norm: bool = False


class MLP(Backbone):
    """``depth`` x (Dense(width) -> [LayerNorm] -> activation)."""

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        f = activation(self.act)
        for _ in range(self.depth):
            x = nn.Dense(self.width)(x)
            if self.layer_norm:
                x = nn.LayerNorm()(x)
            x = f(x)
        return x


class SimBa(Backbone):
    """SimBa (Lee et al., 2024, arXiv 2410.09754): linear embedding, pre-LN residual blocks with a
    4x inverted bottleneck, final LayerNorm. The paper's running-statistics observation norm is
    left to the trainer's observation normaliser."""

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        f = activation(self.act)
        x = nn.Dense(self.width, kernel_init=nn.initializers.orthogonal(1.0))(x)
        for _ in range(self.depth):
            y = nn.LayerNorm()(x)
            y = f(nn.Dense(4 * self.width, kernel_init=nn.initializers.he_normal())(y))
            x = x + nn.Dense(self.width, kernel_init=nn.initializers.he_normal())(y)
        return nn.LayerNorm()(x)


class BroNet(Backbone):
    """BroNet (Nauman et al., 2024, arXiv 2405.16158): Dense-LN-act stem, then residual blocks
    x + LN(Dense(act(LN(Dense(x)))))."""

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        f = activation(self.act)
        init = nn.initializers.orthogonal(jnp.sqrt(2.0))
        x = f(nn.LayerNorm()(nn.Dense(self.width, kernel_init=init)(x)))
        for _ in range(self.depth):
            y = f(nn.LayerNorm()(nn.Dense(self.width, kernel_init=init)(x)))
            x = x + nn.LayerNorm()(nn.Dense(self.width, kernel_init=init)(y))
        return x


BACKBONES: dict[str, type[Backbone]] = {"mlp": MLP, "simba": SimBa, "bronet": BroNet}


def make_backbone(name: str, width: int, depth: int, act: str, layer_norm: bool) -> nn.Module:
    """Build a backbone from the registry; unknown names are a :class:`FluxError`.

    SimBa and BroNet always normalise (their LayerNorms are part of the architecture);
    ``layer_norm`` only changes the MLP."""
    if name not in BACKBONES:
        raise FluxError(f"unknown backbone {name!r}; {close_matches(name, BACKBONES)}")
    activation(act)
    return BACKBONES[name](width=width, depth=depth, act=act, layer_norm=layer_norm)


def backbone_from(net: NetSpec) -> nn.Module:
    """The backbone a resolved :class:`fluxrl.agents.config.NetConfig` describes."""
    return make_backbone(net.backbone, net.width, net.depth, net.act, net.layer_norm)
