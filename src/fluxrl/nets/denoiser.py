"""The network behind every diffusion / flow policy: a conditional denoiser ``f(x_t, t, cond)``.

Its input layer is a Dense over ``[x_t, time features, cond]``, split into three Denses that sum.
This is the same function as one Dense over the concatenation (the layout of Diffusion-QL, Wang et
al. 2023, and of flow-rl's ``DDPMBackbone``), but a sampler can then compute the cond part once per
chain and the time part once per step for the whole batch, instead of redoing both for every sample
at every step (see :mod:`fluxrl.generative`)::

    c = embed_cond(cond)        # once per chain, [..., hidden]; cond [B, 1, obs] covers N samples
    e = embed_time(t_grid)      # once per chain, [steps, hidden]
    out = head(x_t, c, e[i])    # every step: Dense(x_t) + c + e[i] -> act -> backbone -> Dense

The fused input layer is the first hidden layer: ``Denoiser(MLP(256, depth=2, act="mish"), ...)``
is the protocol's 3 x 256 Mish actor (:func:`make_denoiser` does this bookkeeping).
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from fluxrl.errors import FluxError
from fluxrl.nets.backbones import activation, make_backbone


class FourierTimeEmbedding(nn.Module):
    """Random Fourier features of a scalar time: ``[cos(2 pi w t), sin(2 pi w t)]``, ``w ~ N(0,
    scale^2)`` (Tancik et al. 2020, arXiv 2006.10739).

    ``learned=True`` (default) trains ``w`` from that initialisation, as IDQL (Hansen-Estruch et al.
    2023) and flow-rl's ``LearnableFourierEmbedding`` do (their init scale is 0.2 on t in [0, 1]);
    ``learned=False`` keeps ``w`` fixed (drawn from ``seed``, stored nowhere), as the Gaussian
    Fourier projection of Song et al. 2021 (arXiv 2011.13456). ``t`` is any real time input (t in
    [0, 1], or EDM's ``c_noise = ln(sigma) / 4``); ``[...] -> [..., dim]``. Default ``scale = 1``
    (about one period over [0, 1]): on this repo's 2-D mixture test, 0.2 (flow-rl) and 4 fit
    equally well.
    """

    dim: int = 64
    scale: float = 1.0
    learned: bool = True
    seed: int = 0

    @nn.compact
    def __call__(self, t: jax.Array) -> jax.Array:
        if self.dim <= 0 or self.dim % 2:
            raise FluxError(f"time embedding dim must be a positive even number, got {self.dim}")
        init = nn.initializers.normal(self.scale)
        if self.learned:
            w = self.param("freqs", init, (self.dim // 2,))
        else:
            w = init(jax.random.PRNGKey(self.seed), (self.dim // 2,))
        f = 2.0 * jnp.pi * jnp.asarray(t, jnp.float32)[..., None] * w
        return jnp.concatenate([jnp.cos(f), jnp.sin(f)], axis=-1)


class Denoiser(nn.Module):
    """Conditional denoiser ``(x_t, t, cond) -> [..., out_dim]``; what it predicts (noise, velocity,
    or EDM's preconditioned output) is decided by the generative model that trains it.

    ``hidden`` (default ``backbone.width``) is the width of the fused input layer and ``act``
    (default ``backbone.act``) its activation and the time MLP's. The time path is Fourier
    features -> Dense(2 time_dim) -> act -> Dense(time_dim) (Diffusion-QL's time MLP).
    ``cond_encoder`` (optional, e.g. an MLP) encodes the observation before the input layer, as in
    flow-rl's SDAC actor; it too runs once per chain.
    """

    backbone: nn.Module
    out_dim: int
    time_dim: int = 64
    hidden: int | None = None
    act: str | None = None
    cond_encoder: nn.Module | None = None
    fourier_scale: float = 1.0
    learned_fourier: bool = True

    def setup(self) -> None:
        width = self.hidden or getattr(self.backbone, "width", None)
        if not width:
            raise FluxError("Denoiser needs `hidden` when the backbone has no `width`")
        self.fourier = FourierTimeEmbedding(self.time_dim, self.fourier_scale, self.learned_fourier)
        self.time_in = nn.Dense(2 * self.time_dim)
        self.time_out = nn.Dense(self.time_dim)
        self.in_time = nn.Dense(width, use_bias=False)
        self.in_cond = nn.Dense(width)
        self.in_x = nn.Dense(width, use_bias=False)
        self.out = nn.Dense(self.out_dim)

    def _act(self, x: jax.Array) -> jax.Array:
        return activation(self.act or getattr(self.backbone, "act", "mish"))(x)

    def embed_cond(self, cond: jax.Array) -> jax.Array:
        """The observation's share of the input layer, ``[..., obs] -> [..., hidden]``."""
        if self.cond_encoder is not None:
            cond = self.cond_encoder(cond)
        return self.in_cond(cond)

    def embed_time(self, t: jax.Array) -> jax.Array:
        """The time's share of the input layer, ``[...] -> [..., hidden]``."""
        return self.in_time(self.time_out(self._act(self.time_in(self.fourier(t)))))

    def head(self, x_t: jax.Array, cond_emb: jax.Array, t_emb: jax.Array) -> jax.Array:
        """Everything that depends on ``x_t``; embeddings broadcast against ``x_t``'s leading dims."""
        h = self._act(self.in_x(x_t) + cond_emb + t_emb)
        return self.out(self.backbone(h))

    def __call__(self, x_t: jax.Array, t: jax.Array, cond: jax.Array) -> jax.Array:
        return self.head(x_t, self.embed_cond(cond), self.embed_time(t))


def make_denoiser(out_dim: int, backbone: str = "mlp", width: int = 256, depth: int = 3,
                  act: str = "mish", layer_norm: bool = False, time_dim: int = 64,
                  **kw) -> Denoiser:
    """A :class:`Denoiser` whose hidden layers total ``depth`` for ``mlp`` (the fused input layer
    counts as the first), so the defaults are the protocol's 3 x 256 Mish actor with a 64-d time
    embedding. For ``simba`` / ``bronet`` ``depth`` counts residual blocks after the input layer."""
    if depth < 1:
        raise FluxError(f"denoiser depth must be >= 1, got {depth}")
    body = make_backbone(backbone, width, depth - 1 if backbone == "mlp" else depth, act, layer_norm)
    return Denoiser(body, out_dim, time_dim, **kw)
