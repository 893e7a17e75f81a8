"""Soft Actor-Critic (Haarnoja et al. 2018, arXiv 1812.05905): tanh-Gaussian actor, clipped double
Q, automatic temperature. Update order follows flow-rl ``agent/online/sac.py``: critic, then actor
against the new critic, then temperature, then target EMA. Deliberate difference: the temperature
loss reuses the actor step's log-probabilities instead of sampling the actor once more (same
expectation, one forward pass fewer), and the log-std bounds: [-5, 2] as in Yarats & Kostrikov's
pytorch_sac (``config/agent/sac.yaml`` ``log_std_bounds``) and CleanRL (``sac_continuous_action.py``
``LOG_STD_MIN``), which rescale a tanh into that range where this file clips; flow-rl's
``SquashedGaussianActor`` clips at [-20, 2]. Departures of flow-rl from the authors' code
(rail-berkeley/softlearning): the log-std is clipped there (softplus, no clip in softlearning),
and the temperature loss is taken on ``log alpha`` (softlearning: on ``alpha``); the initial
temperature 1, the target entropy ``-|A|``, lr 3e-4 and tau 0.005 agree."""

from __future__ import annotations

from dataclasses import dataclass

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from flax import struct

from fluxrl.agents.base import AlgoInfo, OffPolicyAgent, Shapes
from fluxrl.agents.common import adam_step, critic_step, soft_update, tanh_log_det, td_target
from fluxrl.agents.config import AlgoConfig
from fluxrl.errors import FluxError
from fluxrl.nets.backbones import backbone_from
from fluxrl.nets.critics import QEnsemble, aggregate
from fluxrl.rng import normal


@dataclass
class SACConfig(AlgoConfig):
    """Soft Actor-Critic with a tanh-Gaussian actor and automatic temperature (Haarnoja et al. 2018b)."""

    name: str = "sac"  #: algorithm name in the registry
    lr_alpha: float = 3e-4  #: temperature Adam lr (flow-rl mujoco/algo/sac.yaml alpha_lr)
    init_alpha: float = 1.0  #: initial temperature, log alpha = 0 (flow-rl sac.py TunableCoefficient(0.0))
    target_entropy: float | None = None  #: None means -act_dim (Haarnoja et al. 2018b; flow-rl sac.py)
    log_std_min: float = -5.0  #: lower clip of the actor's log std (pytorch_sac config/agent/sac.yaml log_std_bounds and CleanRL LOG_STD_MIN: -5; flow-rl SquashedGaussianActor: -20)
    log_std_max: float = 2.0  #: upper clip of the actor's log std (pytorch_sac, CleanRL and flow-rl SquashedGaussianActor: 2)

    def validate(self) -> None:
        """Shared checks plus an ordered log-std range."""
        super().validate()
        if not self.log_std_min < self.log_std_max:
            raise FluxError(f"algo.log_std_min ({self.log_std_min}) must be below "
                            f"algo.log_std_max ({self.log_std_max})")


class TanhGaussianActor(nn.Module):
    """Outputs the mean and clipped log-std of a Gaussian that is squashed by tanh."""

    backbone: nn.Module
    act_dim: int
    log_std_min: float
    log_std_max: float

    @nn.compact
    def __call__(self, obs: jax.Array) -> tuple[jax.Array, jax.Array]:
        out = nn.Dense(2 * self.act_dim)(self.backbone(obs))
        mean, log_std = jnp.split(out, 2, axis=-1)
        return mean, jnp.clip(log_std, self.log_std_min, self.log_std_max)


def tanh_gaussian_sample(mean: jax.Array, log_std: jax.Array, key: jax.Array):
    """Reparameterised sample ``tanh(mean + std eps)`` and its log-density (tanh-corrected)."""
    eps = normal(key, mean.shape)  # == jax.random.normal, without the CPU threefry while loop
    u = mean + jnp.exp(log_std) * eps
    logp = -0.5 * (eps**2 + jnp.log(2 * jnp.pi)) - log_std
    logp = logp - tanh_log_det(u)
    return jnp.tanh(u), logp.sum(-1)


@struct.dataclass
class SACState:
    actor: dict
    critic: dict
    target: dict
    log_alpha: jax.Array
    actor_opt: optax.OptState
    critic_opt: optax.OptState
    alpha_opt: optax.OptState


def make_sac(cfg: SACConfig, shapes: Shapes) -> OffPolicyAgent:
    """Build SAC's pure functions for one seed."""
    actor = TanhGaussianActor(backbone_from(cfg.actor), shapes.act_dim, cfg.log_std_min,
                              cfg.log_std_max)
    critic = QEnsemble(backbone_from(cfg.critic), cfg.num_critics)
    tx_actor, tx_critic = optax.flatten(optax.adam(cfg.lr_actor)), optax.flatten(optax.adam(cfg.lr_critic))
    tx_alpha = optax.adam(cfg.lr_alpha)
    target_entropy = -float(shapes.act_dim) if cfg.target_entropy is None else cfg.target_entropy

    def init(key: jax.Array) -> SACState:
        ka, kc = jax.random.split(key)
        obs, act = jnp.zeros((1, shapes.obs_dim)), jnp.zeros((1, shapes.act_dim))
        pa = actor.init(ka, obs)["params"]
        pc = critic.init(kc, obs, act)["params"]
        log_alpha = jnp.log(jnp.asarray(cfg.init_alpha, jnp.float32))
        return SACState(pa, pc, pc, log_alpha, tx_actor.init(pa), tx_critic.init(pc),
                        tx_alpha.init(log_alpha))

    def act(state: SACState, obs: jax.Array, key: jax.Array, deterministic: bool) -> jax.Array:
        mean, log_std = actor.apply({"params": state.actor}, obs)
        if deterministic:
            return jnp.tanh(mean)
        return tanh_gaussian_sample(mean, log_std, key)[0]

    def sample(state: SACState, obs: jax.Array, key: jax.Array, n: int) -> jax.Array:
        mean, log_std = actor.apply({"params": state.actor}, obs[..., None, :])
        shape = obs.shape[:-1] + (n, shapes.act_dim)
        return tanh_gaussian_sample(*(jnp.broadcast_to(v, shape) for v in (mean, log_std)), key)[0]

    def value(state: SACState, obs: jax.Array, a: jax.Array) -> jax.Array:
        return aggregate(critic.apply({"params": state.critic}, obs, a), cfg.critic_agg)

    def update(state: SACState, batch: dict, key: jax.Array, update_index: jax.Array):
        k_next, k_pi = jax.random.split(key)
        alpha = jnp.exp(state.log_alpha)
        mean, log_std = actor.apply({"params": state.actor}, batch["next_obs"])
        next_a, next_logp = tanh_gaussian_sample(mean, log_std, k_next)
        next_q = aggregate(critic.apply({"params": state.target}, batch["next_obs"], next_a),
                           cfg.critic_agg)
        target = td_target(batch["reward"], batch["terminated"], cfg.discount,
                           next_q - alpha * next_logp)

        pc, critic_opt, c_loss, q_mean = critic_step(critic, state.critic, state.critic_opt,
                                                     tx_critic, batch, target)

        def actor_loss(p):
            mean, log_std = actor.apply({"params": p}, batch["obs"])
            a, logp = tanh_gaussian_sample(mean, log_std, k_pi)
            q = aggregate(critic.apply({"params": pc}, batch["obs"], a), cfg.critic_agg)
            return (alpha * logp - q).mean(), logp

        (a_loss, logp), g = jax.value_and_grad(actor_loss, has_aux=True)(state.actor)
        pa, actor_opt = adam_step(state.actor, state.actor_opt, g, tx_actor)

        entropy_gap = jax.lax.stop_gradient(logp + target_entropy).mean()
        g = jax.grad(lambda la: -la * entropy_gap)(state.log_alpha)
        log_alpha, alpha_opt = adam_step(state.log_alpha, state.alpha_opt, g, tx_alpha)

        new = SACState(pa, pc, soft_update(state.target, pc, cfg.tau), log_alpha, actor_opt,
                       critic_opt, alpha_opt)
        metrics = {"critic_loss": c_loss, "actor_loss": a_loss, "q_mean": q_mean,
                   "alpha": alpha, "entropy": -logp.mean()}
        return new, metrics

    return OffPolicyAgent(init, act, update, value, sample)


#: this algorithm's entry in the registry (fluxrl.agents.registry)
ALGO = AlgoInfo("sac", "baseline", "uniform", "off_policy", make_sac,
                "Haarnoja et al. 2018, Soft Actor-Critic Algorithms and Applications", SACConfig,
                follows="flowrl")
