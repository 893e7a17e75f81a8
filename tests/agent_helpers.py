"""Scaffolding the agent tests share (tests/test_agent_contract.py and the per-agent files): small
configs derived from each algorithm's config class, task sizes, random replay minibatches, critic
heads set to constants, and comparisons of parameter trees."""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from fluxrl.agents.base import Shapes
from fluxrl.agents.config import GenerativeConfig
from fluxrl.agents.registry import REGISTRY
from fluxrl.config import compose, resolve

#: Pendulum-v1's sizes, which the per-agent files' hand computations are written for
PENDULUM = Shapes(obs_dim=3, act_dim=1)

#: Sizes every tiny config takes: networks of width 16; for a generative actor also a small state
#: encoder and time embedding and 3 denoising steps.
TINY_NETS = {"algo.actor.width": "16", "algo.critic.width": "16"}
TINY_GENERATIVE = {"algo.obs_encoder_width": "8", "algo.time_dim": "8", "algo.diffusion_steps": "3"}

#: Candidate counts, capped at these values in every config that has the field and a larger default.
CAPS = {"best_of_eval": 3, "best_of_act": 2, "num_reverse_samples": 8, "entropy_samples": 16,
        "train_samples": 8, "num_particles": 8}

#: Small settings that no rule on the config class gives, by algorithm.
SPECIAL = {
    "dpmd": {"algo.target_kl": "1.0"},  # the default 2.5 must stay below log num_particles = log 8
}


#: The task of each setting's tiny configs: Pendulum-v1, as a host simulator or in JAX (same sizes).
TINY_ENV = {"off_policy": "gym/Pendulum-v1", "offline": "gym/Pendulum-v1",
            "on_policy": "jax/Pendulum"}


def tiny_overrides(name: str, *extra: str) -> list[str]:
    """Overrides for a small, fast ``name`` on Pendulum-v1: the rules above, then ``extra``
    (``key=value`` strings; a key given again replaces the rule's value)."""
    cls = REGISTRY[name].config
    values = {"algo": name, "env": TINY_ENV[REGISTRY[name].setting], **TINY_NETS}
    if issubclass(cls, GenerativeConfig):
        values.update(TINY_GENERATIVE)
    for f in dataclasses.fields(cls):
        cap = CAPS.get(f.name)
        if cap is not None and isinstance(f.default, int) and f.default > cap:
            values[f"algo.{f.name}"] = str(cap)
    values.update(SPECIAL.get(name, {}))
    for ov in extra:
        key, value = ov.split("=", 1)
        values[key] = value
    return [f"{k}={v}" for k, v in values.items()]


def tiny_config(name: str, *extra: str) -> Any:
    """The resolved run config of :func:`tiny_overrides` (its ``.algo`` is the agent's config)."""
    return resolve(compose(tiny_overrides(name, *extra)))


def random_batch(shapes: Shapes = PENDULUM, n: int = 64, seed: int = 1, done_every: int = 2,
                 done_prob: float | None = None) -> dict:
    """A replay minibatch of normal observations and rewards and uniform actions; every
    ``done_every``-th transition terminated, or each with probability ``done_prob``."""
    rng = np.random.default_rng(seed)
    batch = {"obs": rng.normal(size=(n, shapes.obs_dim)),
             "action": rng.uniform(-1, 1, (n, shapes.act_dim)),
             "reward": rng.normal(size=n), "next_obs": rng.normal(size=(n, shapes.obs_dim))}
    batch["terminated"] = (rng.random(n) < done_prob if done_prob is not None
                           else np.arange(n) % done_every == done_every - 1)
    return {k: jnp.asarray(v, jnp.float32) for k, v in batch.items()}


def bootstrapped(batch: dict, next_value: Any, discount: float = 0.99,
                 reward_scale: float = 1.0) -> np.ndarray:
    """``reward_scale r + discount (1 - terminated) next_value`` in float64: the TD target by hand."""
    r, done = np.asarray(batch["reward"], np.float64), np.asarray(batch["terminated"], np.float64)
    return reward_scale * r + discount * (1.0 - done) * np.asarray(next_value, np.float64)


def set_q_head(params: dict, bias: Any, kernel_scale: float = 0.0,
               head: str = "VmapQHead_0") -> dict:
    """Ensemble critic params with the last layer's kernel scaled (0: every member outputs its
    bias, whatever the input) and its biases set; ``bias`` is one value per member, or the whole
    bias array (e.g. a Gaussian head's ``[member, (mean, std)]``)."""
    bias = jnp.asarray(bias, jnp.float32)
    dense = params[head]["Dense_0"]
    dense = {"kernel": kernel_scale * dense["kernel"],
             "bias": bias[:, None] if bias.ndim == 1 else bias}
    return {**params, head: {**params[head], "Dense_0": dense}}


def online_q(cfg: Any, params: dict, obs: jax.Array, action: jax.Array) -> np.ndarray:
    """Every member's Q(s, a) of the config's critic ensemble with ``params``, ``[member, B]``."""
    from fluxrl.nets.backbones import backbone_from
    from fluxrl.nets.critics import QEnsemble

    return np.asarray(QEnsemble(backbone_from(cfg.critic), cfg.num_critics).apply(
        {"params": params}, obs, action))


def trees_differ(a: Any, b: Any) -> bool:
    """Whether any leaf of two trees of the same structure differs."""
    return any(not np.array_equal(np.asarray(x), np.asarray(y))
               for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True))


def assert_trees_close(a: Any, b: Any, rtol: float = 1e-5, atol: float = 1e-7) -> None:
    """Two trees of the same structure, leaf by leaf within tolerance."""
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=rtol, atol=atol)


def layout(tree: Any) -> tuple:
    """A tree's structure with each leaf's shape and dtype: what a ``lax.scan`` carry must keep."""
    return jax.tree.structure(tree), [(jnp.shape(x), jnp.result_type(x))
                                      for x in jax.tree.leaves(tree)]


def point_reach_returns(algo: str, run_dir: Any, *extra: str) -> np.ndarray:
    """Train ``algo`` on jax/PointReach with the on-policy learning tests' shared budget and sizes
    (100,352 env steps per seed: 49 iterations of 64 envs x 32 steps, 2 seeds vmapped, 2 x 64
    networks) plus ``extra`` overrides; the evaluation returns ``[evaluations, seeds]``."""
    from fluxrl.train.run import train

    ov = [f"algo={algo}", "env=jax/PointReach", "seeds=2", "frames=100000", "eval_every=25000",
          "log_every=25000", "progress=false", "tensorboard=false", "plot=false",
          "checkpoint_every=0", "on_policy.num_envs=64", "on_policy.unroll_length=32",
          "algo.actor.width=64", "algo.critic.width=64", "algo.actor.depth=2",
          "algo.critic.depth=2", *extra, f"run_dir={run_dir}"]
    return train(compose(ov), ov).eval_returns
