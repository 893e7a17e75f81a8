"""Flow Policy Optimization (McAllister et al. 2025, arXiv 2507.21053): PPO for a flow-matching
policy, whose likelihood ratio is replaced by one of conditional flow-matching (CFM) losses.

Follows the authors' code (akanazawa/fpo at 7823f45, ``playground/src/flow_policy/fpo.py``,
``loss_mode="fpo"``, ``average_losses_before_exp=True``):

- the policy is a velocity field on the linear path ``x_t = (1 - t) a + t eps`` (t = 1 noise),
  sampled by Euler steps from t = 1 to 0 with the network's output scaled by ``output_scale``
  (0.25) and no noise injected;
- acting also draws K pairs ``(eps_k, t_k)``, ``t ~ U(0, 1)``, and stores them with the CFM losses
  ``L_old_k = |eps_k - eps_hat(x_t_k, t_k)|^2 / d`` of the acting policy (the velocity is
  supervised as the noise it implies: ``output_mode="u_but_supervise_as_eps"``);
- the ratio is ``exp(mean_k L_old - mean_k L_new)`` on the same pairs, under PPO's clip (0.05),
  with no entropy term.

Defaults are the paper's Table 4 (10 steps, 8 Monte Carlo pairs, clip 0.05, SiLU actor, ELU
critic, time embedding 16) with its shared on-policy settings (3 x 256, actor lr 1e-4, critic lr
1e-3, gradient norm 1.0). Differences from the authors' code: the denoiser is fluxrl's
(:mod:`fluxrl.nets.denoiser`: learned Fourier time features and a time MLP where FPO
concatenates fixed ``[cos, sin](2^k t)`` features to the input), executed actions are clipped to
[-1, 1] before their CFM losses are taken (FPO takes them on the unclipped sample and lets the
simulator clip), GAE is computed once per rollout by the trainer (FPO: in every minibatch), the
policy and value have their own Adam and learning rate (FPO: one Adam, lr 3e-4), and a truncated
step bootstraps from its last observation (FPO masks it out of the value loss).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

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
    value_loss,
)
from fluxrl.agents.config import NetConfig, PolicyGradientConfig
from fluxrl.errors import FluxError
from fluxrl.generative import make_model
from fluxrl.generative.base import Network, as_network
from fluxrl.nets.backbones import backbone_from
from fluxrl.nets.denoiser import make_denoiser
from fluxrl.rng import normal


@dataclass
class FPOConfig(PolicyGradientConfig):
    """FPO: PPO with a ratio of conditional flow-matching losses (paper Table 4)."""

    name: str = "fpo"  #: algorithm name in the registry
    actor: NetConfig = field(default_factory=lambda: NetConfig(width=256, depth=3, act="silu"))  #: velocity network, depth counting its fused input layer (paper Table 4: 3 x 256 SiLU)
    critic: NetConfig = field(default_factory=lambda: NetConfig(width=256, depth=3, act="elu"))  #: value network (paper Table 4: 3 x 256 ELU)
    clip: float = 0.05  #: PPO clip on the CFM ratio (paper Table 4; akanazawa/fpo fpo.py clipping_epsilon)
    flow_steps: int = 10  #: Euler steps when sampling (paper Table 4; fpo.py flow_steps)
    num_mc: int = 8  #: (eps, t) pairs per action for the CFM losses (paper Table 4; fpo.py n_samples_per_action)
    time_dim: int = 16  #: time-embedding size (paper Table 4: 16; fpo.py timestep_embed_dim 8)
    fourier_scale: float = 1.0  #: init std of the denoiser's learned Fourier frequencies (fluxrl.nets.denoiser default)
    output_scale: float = 0.25  #: the velocity network's output is multiplied by this (fpo.py policy_mlp_output_scale)

    def validate(self) -> None:
        """Shared checks plus positive flow sizes and scales."""
        super().validate()
        for key in ("flow_steps", "num_mc", "time_dim"):
            if getattr(self, key) < 1:
                raise FluxError(f"algo.{key} must be at least 1, got {getattr(self, key)}")
        if self.time_dim % 2:
            raise FluxError(f"algo.time_dim must be even (cos and sin halves), got {self.time_dim}")
        for key in ("fourier_scale", "output_scale"):
            if not getattr(self, key) > 0:
                raise FluxError(f"algo.{key} must be positive, got {getattr(self, key)}")


def flow_policy(cfg: FPOConfig, act_dim: int) -> tuple[Any, Any, Network]:
    """The flow model, the denoiser module, and the denoiser as a :class:`Network` whose output
    is scaled by ``output_scale`` (the velocity)."""
    model = make_model("flow", steps=cfg.flow_steps)
    net = cfg.actor
    denoiser = make_denoiser(act_dim, net.backbone, net.width, net.depth, net.act,
                             net.layer_norm, cfg.time_dim, fourier_scale=cfg.fourier_scale)
    base = as_network(denoiser)
    velocity = Network(base.embed_cond, base.embed_time,
                       lambda p, x, c, e: cfg.output_scale * base.head(p, x, c, e))
    return model, denoiser, velocity


def cfm_losses(model: Any, velocity: Network, params: dict, obs: jax.Array, action: jax.Array,
               eps: jax.Array, t: jax.Array) -> jax.Array:
    """``[n, K]`` losses ``mean_d (eps - eps_hat)^2`` at ``x_t = (1 - t) a + t eps`` for actions
    ``[n, A]``, pairs ``eps [n, K, A]``, ``t [n, K]``."""
    x_t = (1.0 - t[..., None]) * action[:, None] + t[..., None] * eps
    c = velocity.embed_cond(params, obs)[:, None]
    pred = velocity.head(params, x_t, c, velocity.embed_time(params, model.time_input(t)))
    return ((eps - model.to_eps(pred, x_t, t)) ** 2).mean(-1)


def make_fpo(cfg: FPOConfig, shapes: Shapes) -> OnPolicyAgent:
    """Build FPO for one seed."""
    cfg.validate()
    model, denoiser, velocity = flow_policy(cfg, shapes.act_dim)
    critic = ValueHead(backbone_from(cfg.critic))
    tx_actor, tx_critic = optax.adam(cfg.lr_actor), optax.adam(cfg.lr_critic)
    k, a_dim = cfg.num_mc, shapes.act_dim

    def init(key: jax.Array) -> PGState:
        ka, kc = jax.random.split(key)
        obs, act = jnp.zeros((1, shapes.obs_dim)), jnp.zeros((1, a_dim))
        pa = denoiser.init(ka, act, jnp.zeros((1,)), obs)["params"]
        pc = critic.init(kc, obs)["params"]
        return PGState(pa, pc, tx_actor.init(pa), tx_critic.init(pc))

    def act(state: PGState, obs: jax.Array, key: jax.Array, deterministic: bool):
        k_sample, k_eps, k_t = jax.random.split(key, 3)
        n = obs.shape[0]
        action = model.sample(velocity, state.actor, obs, k_sample, (n, a_dim))
        if deterministic:  # FPO evaluates by sampling too: its flag only drops the noise it may
            return action, {}  # add after sampling (feather_std, 0 by default)
        eps = normal(k_eps, (n, k, a_dim))
        t = jax.random.uniform(k_t, (n, k))
        return action, {"eps": eps, "t": t, "cfm": cfm_losses(model, velocity, state.actor, obs, action,
                                                                  eps, t)}

    def value(state: PGState, obs: jax.Array) -> jax.Array:
        return critic.apply({"params": state.critic}, obs)

    def loss_fn(params: tuple, batch: Rollout, key: jax.Array):
        pa, pc = params
        ex = batch.extras
        new = cfm_losses(model, velocity, pa, batch.obs, batch.action, ex["eps"], ex["t"])
        ratio = jnp.exp(ex["cfm"].mean(-1) - new.mean(-1))
        adv = standardise(batch.advantage) if cfg.normalize_advantage else batch.advantage
        policy_loss, clipped = clipped_surrogate(ratio, adv, cfg.clip)
        v_loss = value_loss(critic, pc, batch.obs, batch.target, cfg.value_coef)
        return policy_loss + v_loss, {"policy_loss": policy_loss, "value_loss": v_loss,
                                      "clip_fraction": clipped, "ratio_mean": ratio.mean(),
                                      "cfm_loss": new.mean()}

    return OnPolicyAgent(init=init, act=act, value=value,
                         update=pg_update(loss_fn, tx_actor, tx_critic, cfg.max_grad_norm))


ALGO = AlgoInfo(
    name="fpo", family="policy_gradient", reference="previous", setting="on_policy",
    make=make_fpo, paper="McAllister et al. 2025, Flow Matching Policy Gradients", config=FPOConfig,
    follows="authors",
)
