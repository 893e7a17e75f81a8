"""TD3 (Fujimoto et al. 2018, arXiv 1802.09477): deterministic tanh actor, clipped double Q, target
policy smoothing, delayed actor and target updates. Defaults from flow-rl ``mujoco/algo/td3.yaml``,
which equal the authors' (sfujim/TD3 ``main.py``: delay 2, smoothing 0.2 clipped at 0.5,
exploration 0.1, 256-256 ReLU, lr 3e-4). On DMC, flow-rl's ``dmc/algo/td3.yaml`` departs from them
(actor and target every step, noise clip 0.3, exploration 0.2, ReLU where the other DMC agents
use ELU) and we follow it there, through rows of :mod:`fluxrl.task_defaults` (same at b1385e0 and
bae22f4), so that TD3 on DMC is the reference's TD3. The delayed update is a real ``lax.cond`` on
the global update index, shared across vmapped seeds."""

from __future__ import annotations

from dataclasses import dataclass, field

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from flax import struct

from fluxrl.agents.base import AlgoInfo, OffPolicyAgent, Shapes
from fluxrl.agents.common import adam_step, critic_step, soft_update, td_target
from fluxrl.agents.config import AlgoConfig, NetConfig
from fluxrl.nets.backbones import backbone_from
from fluxrl.nets.critics import QEnsemble, aggregate
from fluxrl.rng import normal


@dataclass
class TD3Config(AlgoConfig):
    """Twin Delayed DDPG (Fujimoto et al. 2018), defaults from flow-rl mujoco/algo/td3.yaml."""

    name: str = "td3"  #: algorithm name in the registry
    actor: NetConfig = field(default_factory=NetConfig)  #: actor backbone (flow-rl td3.yaml 2x256 relu)
    num_critics: int = 2  #: Q ensemble size (Fujimoto et al. 2018)
    tau: float = 0.005  #: target EMA rate (flow-rl td3.yaml ema)
    lr_actor: float = 3e-4  #: actor Adam lr (flow-rl td3.yaml)
    lr_critic: float = 3e-4  #: critic Adam lr (flow-rl td3.yaml)
    policy_delay: int = 2  #: critic updates per actor and target update (flow-rl mujoco td3.yaml actor_update_freq; DMC 1 via fluxrl.task_defaults)
    target_noise: float = 0.2  #: std of target policy smoothing noise (flow-rl td3.yaml)
    noise_clip: float = 0.5  #: clip of the smoothing noise (flow-rl mujoco td3.yaml; DMC 0.3 via fluxrl.task_defaults)
    explore_noise: float = 0.1  #: std of Gaussian exploration noise (flow-rl mujoco td3.yaml exploration_noise; DMC 0.2 via fluxrl.task_defaults)


class DeterministicActor(nn.Module):
    """``tanh(Dense(backbone(obs)))``."""

    backbone: nn.Module
    act_dim: int

    @nn.compact
    def __call__(self, obs: jax.Array) -> jax.Array:
        return jnp.tanh(nn.Dense(self.act_dim)(self.backbone(obs)))


@struct.dataclass
class TD3State:
    actor: dict
    critic: dict
    actor_target: dict
    critic_target: dict
    actor_opt: optax.OptState
    critic_opt: optax.OptState


def make_td3(cfg: TD3Config, shapes: Shapes) -> OffPolicyAgent:
    """Build TD3's pure functions for one seed."""
    actor = DeterministicActor(backbone_from(cfg.actor), shapes.act_dim)
    critic = QEnsemble(backbone_from(cfg.critic), cfg.num_critics)
    tx_actor, tx_critic = optax.adam(cfg.lr_actor), optax.adam(cfg.lr_critic)

    def init(key: jax.Array) -> TD3State:
        ka, kc = jax.random.split(key)
        obs, act = jnp.zeros((1, shapes.obs_dim)), jnp.zeros((1, shapes.act_dim))
        pa = actor.init(ka, obs)["params"]
        pc = critic.init(kc, obs, act)["params"]
        return TD3State(pa, pc, pa, pc, tx_actor.init(pa), tx_critic.init(pc))

    def act(state: TD3State, obs: jax.Array, key: jax.Array, deterministic: bool) -> jax.Array:
        a = actor.apply({"params": state.actor}, obs)
        if deterministic:
            return a
        return jnp.clip(a + cfg.explore_noise * normal(key, a.shape), -1.0, 1.0)

    def value(state: TD3State, obs: jax.Array, a: jax.Array) -> jax.Array:
        return aggregate(critic.apply({"params": state.critic}, obs, a), cfg.critic_agg)

    def update(state: TD3State, batch: dict, key: jax.Array, update_index: jax.Array):
        noise = jnp.clip(cfg.target_noise * normal(key, batch["action"].shape),
                         -cfg.noise_clip, cfg.noise_clip)
        next_a = jnp.clip(actor.apply({"params": state.actor_target}, batch["next_obs"]) + noise,
                          -1.0, 1.0)
        next_q = aggregate(critic.apply({"params": state.critic_target}, batch["next_obs"],
                                        next_a), cfg.critic_agg)
        target = td_target(batch["reward"], batch["terminated"], cfg.discount, next_q)

        pc, critic_opt, c_loss, q_mean = critic_step(critic, state.critic, state.critic_opt,
                                                     tx_critic, batch, target)
        state = state.replace(critic=pc, critic_opt=critic_opt)

        def delayed(s: TD3State):
            def actor_loss(p):
                a = actor.apply({"params": p}, batch["obs"])
                return -critic.apply({"params": s.critic}, batch["obs"], a)[0].mean()

            loss, g = jax.value_and_grad(actor_loss)(s.actor)
            pa, actor_opt = adam_step(s.actor, s.actor_opt, g, tx_actor)
            s = s.replace(actor=pa, actor_opt=actor_opt,
                          actor_target=soft_update(s.actor_target, pa, cfg.tau),
                          critic_target=soft_update(s.critic_target, s.critic, cfg.tau))
            return s, loss

        def skip(s: TD3State):
            return s, jnp.zeros((), jnp.float32)

        state, a_loss = jax.lax.cond(update_index % cfg.policy_delay == 0, delayed, skip, state)
        # actor_loss is 0 on the critic-only steps, so its logged mean is scaled by 1/policy_delay
        return state, {"critic_loss": c_loss, "q_mean": q_mean, "actor_loss": a_loss}

    return OffPolicyAgent(init, act, update, value)


#: this algorithm's entry in the registry (fluxrl.agents.registry)
ALGO = AlgoInfo("td3", "baseline", "none", "off_policy", make_td3,
                "Fujimoto et al. 2018, Addressing Function Approximation Error in Actor-Critic",
                TD3Config,
                follows="flowrl")
