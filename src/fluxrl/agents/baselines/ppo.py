"""Proximal Policy Optimization (Schulman et al. 2017, arXiv 1707.06347), the on-policy baseline:
a tanh-squashed Gaussian policy, a state-value critic, the clipped surrogate.

The policy and losses follow Brax (google/brax ``training/agents/ppo/losses.py`` and
``training/distribution.py`` ``NormalTanhDistribution``, read at ec075da):

- the policy head gives ``loc`` and ``scale = softplus(raw) + 0.001``; an action is
  ``tanh(loc + scale eps)`` and its log-probability is the Gaussian's minus ``log(1 - tanh^2)``;
  the evaluation action is ``tanh(loc)``;
- the loss is ``-mean(min(rho A, clip(rho, 1 - eps, 1 + eps) A)) + value_coef * 0.5 mean((V -
  target)^2) - entropy_cost * entropy``, advantages standardised per minibatch, the entropy the
  Gaussian's plus the tanh log-Jacobian at one sample.

Defaults are the paper's Table 4 (actor lr 1e-4, critic lr 1e-3, clip 0.2, entropy 1e-4,
gradient norm 1.0, 3 x 256 ELU); on ``playground/`` the Brax preset of MuJoCo Playground's DM
Control suite applies (:mod:`fluxrl.task_defaults`). Differences from Brax: the trainer computes
GAE once per rollout with the value network that collected it (PureJaxRL, CleanRL; Brax
recomputes it in every minibatch with the current value network), minibatches are drawn over
single steps rather than whole unrolls, a truncated step bootstraps from the value of its last
observation (Brax drops it from the loss), and the policy and value networks have their own Adam
(one learning rate each, as in the paper; with equal rates and no clipping this is Brax's one
Adam over both).
"""

from __future__ import annotations

from dataclasses import dataclass

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from fluxrl.agents.base import AlgoInfo, OnPolicyAgent, Rollout, Shapes
from fluxrl.agents.common import (
    PGState,
    ValueHead,
    clipped_surrogate,
    pg_update,
    standardise,
    tanh_log_det,
    value_loss,
)
from fluxrl.agents.config import PolicyGradientConfig
from fluxrl.errors import FluxError
from fluxrl.nets.backbones import backbone_from
from fluxrl.rng import normal

MIN_STD = 0.001  #: added to the softplus of the policy's scale (Brax NormalTanhDistribution min_std)


@dataclass
class PPOConfig(PolicyGradientConfig):
    """PPO with a tanh-Gaussian policy (paper Table 4; Brax's preset on Playground)."""

    name: str = "ppo"  #: algorithm name in the registry
    entropy_cost: float = 1e-4  #: weight of the entropy bonus (paper Table 4 PPO: 1e-4; Playground DMC: 1e-2)

    def validate(self) -> None:
        """Shared checks plus a non-negative entropy cost."""
        super().validate()
        if self.entropy_cost < 0:
            raise FluxError(f"algo.entropy_cost must be zero or positive, got {self.entropy_cost}")


class GaussianHead(nn.Module):
    """``loc`` and ``scale`` of a diagonal Gaussian over the pre-tanh action."""

    backbone: nn.Module
    act_dim: int

    @nn.compact
    def __call__(self, obs: jax.Array) -> tuple[jax.Array, jax.Array]:
        loc, raw = jnp.split(nn.Dense(2 * self.act_dim)(self.backbone(obs)), 2, axis=-1)
        return loc, jax.nn.softplus(raw) + MIN_STD


def log_prob(loc: jax.Array, scale: jax.Array, u: jax.Array) -> jax.Array:
    """Log-density of the action ``tanh(u)`` for a pre-tanh sample ``u``."""
    z = (u - loc) / scale
    return (-0.5 * z**2 - jnp.log(scale) - 0.5 * jnp.log(2 * jnp.pi) - tanh_log_det(u)).sum(-1)


def make_ppo(cfg: PPOConfig, shapes: Shapes) -> OnPolicyAgent:
    """Build PPO for one seed."""
    cfg.validate()
    actor = GaussianHead(backbone_from(cfg.actor), shapes.act_dim)
    critic = ValueHead(backbone_from(cfg.critic))
    tx_actor, tx_critic = optax.adam(cfg.lr_actor), optax.adam(cfg.lr_critic)

    def init(key: jax.Array) -> PGState:
        ka, kc = jax.random.split(key)
        obs = jnp.zeros((1, shapes.obs_dim))
        pa, pc = actor.init(ka, obs)["params"], critic.init(kc, obs)["params"]
        return PGState(pa, pc, tx_actor.init(pa), tx_critic.init(pc))

    def act(state: PGState, obs: jax.Array, key: jax.Array, deterministic: bool):
        loc, scale = actor.apply({"params": state.actor}, obs)
        if deterministic:
            return jnp.tanh(loc), {}
        u = loc + scale * normal(key, loc.shape)
        return jnp.tanh(u), {"raw_action": u, "log_prob": log_prob(loc, scale, u)}

    def value(state: PGState, obs: jax.Array) -> jax.Array:
        return critic.apply({"params": state.critic}, obs)

    def loss_fn(params: tuple, batch: Rollout, key: jax.Array):
        pa, pc = params
        loc, scale = actor.apply({"params": pa}, batch.obs)
        ratio = jnp.exp(log_prob(loc, scale, batch.extras["raw_action"]) - batch.extras["log_prob"])
        adv = standardise(batch.advantage) if cfg.normalize_advantage else batch.advantage
        policy_loss, clipped = clipped_surrogate(ratio, adv, cfg.clip)
        v_loss = value_loss(critic, pc, batch.obs, batch.target, cfg.value_coef)
        sample = loc + scale * normal(key, loc.shape)
        entropy = (0.5 + 0.5 * jnp.log(2 * jnp.pi) + jnp.log(scale)
                   + tanh_log_det(sample)).sum(-1).mean()
        total = policy_loss + v_loss - cfg.entropy_cost * entropy
        return total, {"policy_loss": policy_loss, "value_loss": v_loss, "entropy": entropy,
                       "clip_fraction": clipped, "approx_kl": ((ratio - 1) - jnp.log(ratio)).mean()}

    return OnPolicyAgent(init=init, act=act, value=value,
                         update=pg_update(loss_fn, tx_actor, tx_critic, cfg.max_grad_norm))


ALGO = AlgoInfo(
    name="ppo", family="baseline", reference="previous", setting="on_policy",
    make=make_ppo, paper="Schulman et al. 2017, Proximal Policy Optimization Algorithms",
    config=PPOConfig,
    follows="brax",
)
