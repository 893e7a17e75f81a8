"""iDEM's score target against the scale of Q: the unnormalised DEM estimator and flow-rl's
normalised one (:func:`fluxrl.guidance.energy_score.energy_score`, ``normalize=``).

A fixed random critic ``Q(s, a) = c * MLP(s, a)`` (2 x 64 tanh, one per seed) is scaled by ``c``
so that the batch's mean ``|grad_a Q|`` takes three values a decade apart. For each scale and
both forms it prints the mean ``|noise target|`` (the iDEM regression target of a vp-cosine
model) and the mean effective sample size ``1 / sum_k w_k^2`` of the candidate weights.

    python benchmarks/idem_scale.py            # 500 candidates, temperature 0.05, batch 256
"""

from __future__ import annotations

import argparse

import jax
import jax.numpy as jnp
import numpy as np

from fluxrl.generative import make_model
from fluxrl.guidance.energy_score import energy_score


def critic(key: jax.Array, obs_dim: int, act_dim: int, width: int = 64):
    """A random 2-layer tanh MLP ``(s, a) -> R`` and its parameters."""
    k1, k2, k3 = jax.random.split(key, 3)
    w1 = jax.random.normal(k1, (obs_dim + act_dim, width)) / np.sqrt(obs_dim + act_dim)
    w2 = jax.random.normal(k2, (width, width)) / np.sqrt(width)
    w3 = jax.random.normal(k3, (width,)) / np.sqrt(width)

    def q(s: jax.Array, a: jax.Array) -> jax.Array:
        h = jnp.tanh(jnp.concatenate([s, a], -1) @ w1)
        return jnp.tanh(h @ w2) @ w3

    return q


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--candidates", type=int, default=500)
    p.add_argument("--temperature", type=float, default=0.05)
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--act-dim", type=int, default=3)
    p.add_argument("--obs-dim", type=int, default=11)
    p.add_argument("--target-grads", type=float, nargs="*", default=[1.0, 10.0, 100.0],
                   help="mean |grad_a Q| values to scale the critic to")
    args = p.parse_args()
    model = make_model("vp-cosine")
    key = jax.random.PRNGKey(0)
    ks, ka, kt, kn, kc, kq = jax.random.split(key, 6)
    obs = jax.random.normal(ks, (args.batch, args.obs_dim))
    a0 = jax.random.uniform(ka, (args.batch, args.act_dim), minval=-1.0, maxval=1.0)
    t = model.sample_time(kt, (args.batch,))
    a_t, _ = model.q_sample(kn, a0, t)
    q = critic(kc, args.obs_dim, args.act_dim)

    def value(a: jax.Array, o: jax.Array, c: float) -> jax.Array:
        return c * q(jnp.broadcast_to(o[:, None, :], a.shape[:-1] + o.shape[-1:]), a)

    # the unscaled critic's mean |grad_a Q| at the candidates, to set c
    _, info = energy_score(model, kq, a_t, t, lambda a, o: value(a, o, 1.0), args.candidates,
                           args.temperature, per_state=(obs,), normalize=True)
    base = float(info["scale"])
    print(f"candidates {args.candidates}, temperature {args.temperature}, batch {args.batch}, "
          f"act_dim {args.act_dim}")
    print("| mean abs grad_a Q | form | mean abs noise target | mean ESS |")
    print("|---|---|---|---|")
    for g in args.target_grads:
        c = g / base
        for normalize in (False, True):
            score, info = energy_score(model, kq, a_t, t, lambda a, o, c=c: value(a, o, c),
                                       args.candidates, args.temperature, per_state=(obs,),
                                       normalize=normalize)
            target = model.from_score(score, a_t, t)
            w = np.asarray(info["weights"], np.float64)
            ess = float((1.0 / np.sum(w**2, -1)).mean())
            form = "normalised (flow-rl)" if normalize else "unnormalised"
            print(f"| {g:g} | {form} | {float(jnp.abs(target).mean()):.3g} | {ess:.3g} |")


if __name__ == "__main__":
    main()
