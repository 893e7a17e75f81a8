"""Flow Policy Optimization (McAllister et al. 2025, arXiv 2507.21053): PPO for a flow-matching
policy, whose likelihood ratio is replaced by one of conditional flow-matching (CFM) losses; and
FPO++ (Yi, Choi et al. 2026, arXiv 2602.02481), registered as ``fpo_pp``, the same agent with
the changes below switched on by its config's defaults.

FPO follows the authors' code (akanazawa/fpo at 7823f45, ``playground/src/flow_policy/fpo.py``,
``loss_mode="fpo"``, ``average_losses_before_exp=True``):

- the policy is a velocity field on the linear path ``x_t = (1 - t) a + t eps`` (t = 1 noise),
  sampled by Euler steps from t = 1 to 0 with the network's output scaled by ``output_scale``
  (0.25) and no noise injected;
- acting also draws K pairs ``(eps_k, t_k)``, ``t ~ U(0, 1)`` (``discretize_t_for_training``
  False at 7823f45; True, t on the sampling grid, from 418c255 on), and stores them with the CFM
  losses ``L_old_k = |eps_k - eps_hat(x_t_k, t_k)|^2 / d`` of the acting policy (the velocity is
  supervised as the noise it implies: ``output_mode="u_but_supervise_as_eps"``);
- the ratio is ``exp(mean_k L_old - mean_k L_new)`` on the same pairs, under PPO's clip (0.05),
  with no entropy term.

FPO++ follows amazon-far/fpo-control's IsaacLab code (its initial release cd38cea, read in the
fork RPFey/fpo-control; the runner equals amazon-far's stored 6285a91), ``isaaclab_fpo/``
``algorithms/fpo.py``, ``modules/actor_critic.py``, ``modules/ema.py``, ``rl_cfg.py``,
``runners/on_policy_runner.py``: one ratio per pair, ``exp(clamp_ste(L_old_k - L_new_k, max
10))`` (forward clamped, gradient of the unclamped value); both losses clamped at 20 and the new
one again at 20 where ``A < 0``; ASPO, PPO's clip where ``A > 0`` and SPO's ``-(r A - |A| / (2
eps) (r - 1)^2)`` elsewhere (eps 0.05); K = 16 (32 on its humanoids); the velocity regressed
directly, ``sum_d (v - (eps - a))^2 / sqrt(d)``; ``t ~ U(0.005, 0.995)``; 64 Euler steps; acting
noise 0.02 added to the stored action; AdamW (decay 1e-4); evaluation with an EMA (0.95) of the
policy from zero noise (its ``act_inference`` "zero" mode, the first it reports).

Defaults of ``fpo`` are the paper's Table 4 (10 steps, 8 Monte Carlo pairs, clip 0.05, SiLU actor,
ELU critic, time embedding 16) with its shared on-policy settings (3 x 256, actor lr 1e-4, critic
lr 1e-3, gradient norm 1.0). Differences from both references: the denoiser is fluxrl's
(:mod:`fluxrl.nets.denoiser`: learned Fourier time features and a time MLP where both concatenate
fixed ``[cos, sin](2^k t)`` features to the input), executed actions are clipped to [-1, 1] before
their CFM losses are taken (the references take them on the unclipped action; fpo-control's
simulator clips at 2), GAE is computed once per rollout by the trainer (FPO: in every minibatch),
the policy and value have their own optimiser and learning rate (both: one over both networks),
and a truncated step bootstraps from its last observation (FPO masks it out of the value loss;
fpo-control adds ``gamma V(s_t)`` to its reward). FPO++ also: advantages are standardised per
minibatch (fpo-control: over the rollout) and not clamped at +-100; the EMA steps every
``ema_every`` updates (16 = the trainer's 4 epochs x 4 minibatches; fpo-control's once per
iteration of 16 x 4) after ``ema_warmup`` such blocks; the trainer settings (fpo-control: 16
epochs, 24 steps x 4096 envs) are the ``on_policy.*`` ones.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import struct

from fluxrl.agents.base import AlgoInfo, OnPolicyAgent, Rollout, Shapes
from fluxrl.agents.common import (
    PGState,
    ValueHead,
    clipped_surrogate,
    pg_step,
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

#: the string fields and their values
CHOICES = {"ratio_mode": ("mean", "per_sample"), "trust_region": ("ppo", "spo", "aspo"),
           "cfm_loss": ("eps", "velocity")}


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
    cfm_loss: str = "eps"  #: eps: mean_d (eps - eps_hat)^2 (fpo.py output_mode u_but_supervise_as_eps); velocity: sum_d (v - (eps - a))^2 / sqrt(d) (fpo-control actor_critic.py, cfm_loss_reduction sqrt)
    cfm_t_margin: float = 0.0  #: t ~ U(margin, 1 - margin) for the CFM pairs (fpo.py: U(0, 1); fpo-control fpo.py act: 0.005)
    action_noise: float = 0.0  #: std of Gaussian noise added to a rollout action, which is stored with it (fpo.py feather_std 0; fpo-control rl_cfg.py action_perturb_std 0.02)
    ratio_mode: str = "mean"  #: mean: exp(mean_k L_old - mean_k L_new) (fpo.py average_losses_before_exp); per_sample: one ratio per pair (fpo-control fpo.py)
    log_ratio_clamp: float = 0.0  #: straight-through upper clamp of the log-ratio, 0 = none (fpo.py: none; fpo-control rl_cfg.py cfm_diff_clamp_max 10)
    cfm_clamp: float = 0.0  #: upper clamp of the old and new CFM losses, 0 = none (fpo.py: none; fpo-control rl_cfg.py cfm_loss_clamp 20)
    cfm_clamp_negative: float = 0.0  #: upper clamp of the new CFM loss where A < 0, 0 = none (fpo.py: none; fpo-control rl_cfg.py cfm_loss_clamp_negative_advantages_max 20)
    trust_region: str = "ppo"  #: ppo clip, spo quadratic penalty, or aspo: ppo where A > 0, spo elsewhere (fpo.py: ppo; fpo-control rl_cfg.py trust_region_mode aspo)
    weight_decay: float = 0.0  #: decoupled (AdamW) weight decay of both networks, 0 = Adam (fpo.py: Adam; fpo-control rl_cfg.py 1e-4)
    ema: float = 0.0  #: decay of the EMA of the policy that evaluation acts with, 0 = none (fpo.py: none; fpo-control rl_cfg.py ema_decay 0.95)
    ema_every: int = 16  #: updates per EMA step; set it to on_policy.update_epochs x num_minibatches (4 x 4, paper Table 4) for one step per iteration (fpo-control on_policy_runner.py: after each alg.update())
    ema_warmup: int = 500  #: EMA blocks in which the EMA copies the policy before averaging starts (fpo-control rl_cfg.py ema_warmup_steps 500)
    eval_from_zero: bool = False  #: evaluation integrates from x_1 = 0 instead of a noise draw (fpo.py: a draw; fpo-control actor_critic.py act_inference eval_mode zero)

    def validate(self) -> None:
        """Shared checks plus positive flow sizes and scales and known modes."""
        super().validate()
        for key in ("flow_steps", "num_mc", "time_dim", "ema_every"):
            if getattr(self, key) < 1:
                raise FluxError(f"algo.{key} must be at least 1, got {getattr(self, key)}")
        if self.time_dim % 2:
            raise FluxError(f"algo.time_dim must be even (cos and sin halves), got {self.time_dim}")
        for key in ("fourier_scale", "output_scale"):
            if not getattr(self, key) > 0:
                raise FluxError(f"algo.{key} must be positive, got {getattr(self, key)}")
        for key, options in CHOICES.items():
            if getattr(self, key) not in options:
                raise FluxError(f"algo.{key} must be one of {', '.join(options)}, got "
                                f"{getattr(self, key)!r}")
        for key in ("action_noise", "log_ratio_clamp", "cfm_clamp", "cfm_clamp_negative",
                    "weight_decay", "ema_warmup"):
            if not (math.isfinite(getattr(self, key)) and getattr(self, key) >= 0):
                raise FluxError(f"algo.{key} must be zero (off) or positive, got {getattr(self, key)}")
        if not 0.0 <= self.ema < 1.0:
            raise FluxError(f"algo.ema must lie in [0, 1) (0: no EMA), got {self.ema}")
        if not 0.0 <= self.cfm_t_margin < 0.5:
            raise FluxError(f"algo.cfm_t_margin must lie in [0, 0.5), got {self.cfm_t_margin}")


@dataclass
class FPOPPConfig(FPOConfig):
    """FPO++: FPO with per-pair ratios, clamps, ASPO and an EMA policy (fpo-control rl_cfg.py)."""

    name: str = "fpo_pp"  #: algorithm name in the registry
    actor: NetConfig = field(default_factory=lambda: NetConfig(width=256, depth=3, act="elu"))  #: velocity network (fpo-control task_cfgs.py: 3 x 256 ELU)
    critic: NetConfig = field(default_factory=lambda: NetConfig(width=768, depth=3, act="elu"))  #: value network (fpo-control task_cfgs.py: 3 x 768 ELU)
    lr_critic: float = 1e-4  #: value lr (fpo-control rl_cfg.py learning_rate 1e-4, one optimiser)
    value_coef: float = 2.0  #: 2 x 0.5 mean (V - target)^2 = fpo-control's value_loss_coef 1.0 x mse (rl_cfg.py)
    flow_steps: int = 64  #: Euler steps when sampling (fpo-control rl_cfg.py sampling_steps)
    num_mc: int = 16  #: (eps, t) pairs per action (fpo-control rl_cfg.py n_samples_per_action; 32 on its humanoids)
    time_dim: int = 8  #: time-embedding size (fpo-control rl_cfg.py timestep_embed_dim)
    output_scale: float = 1.0  #: (fpo-control rl_cfg.py actor_mlp_output_scale)
    cfm_loss: str = "velocity"  #: (fpo-control actor_critic.py get_cfm_loss, "u" mode, sqrt reduction)
    cfm_t_margin: float = 0.005  #: (fpo-control fpo.py act: t = 0.005 + 0.99 u)
    action_noise: float = 0.02  #: (fpo-control rl_cfg.py action_perturb_std)
    ratio_mode: str = "per_sample"  #: (fpo-control fpo.py: "no averaging before exp")
    log_ratio_clamp: float = 10.0  #: (fpo-control rl_cfg.py cfm_diff_clamp_max)
    cfm_clamp: float = 20.0  #: (fpo-control rl_cfg.py cfm_loss_clamp)
    cfm_clamp_negative: float = 20.0  #: (fpo-control rl_cfg.py cfm_loss_clamp_negative_advantages_max; a no-op next to cfm_clamp 20)
    trust_region: str = "aspo"  #: (fpo-control rl_cfg.py trust_region_mode)
    weight_decay: float = 1e-4  #: (fpo-control rl_cfg.py weight_decay)
    ema: float = 0.95  #: (fpo-control rl_cfg.py ema_decay)
    eval_from_zero: bool = True  #: (fpo-control actor_critic.py act_inference "zero")


@struct.dataclass
class EMAState(PGState):
    """:class:`PGState` plus the EMA of the policy's parameters that evaluation acts with."""

    ema: dict


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
               eps: jax.Array, t: jax.Array, kind: str = "eps") -> jax.Array:
    """``[n, K]`` CFM losses at ``x_t = (1 - t) a + t eps`` for actions ``[n, A]``, pairs ``eps
    [n, K, A]``, ``t [n, K]``: ``mean_d (eps - eps_hat)^2`` (``kind="eps"``) or ``sum_d (v - (eps
    - a))^2 / sqrt(A)`` (``"velocity"``)."""
    x_t = (1.0 - t[..., None]) * action[:, None] + t[..., None] * eps
    c = velocity.embed_cond(params, obs)[:, None]
    pred = velocity.head(params, x_t, c, velocity.embed_time(params, model.time_input(t)))
    if kind == "velocity":
        return ((pred - (eps - action[:, None])) ** 2).sum(-1) / math.sqrt(action.shape[-1])
    return ((eps - model.to_eps(pred, x_t, t)) ** 2).mean(-1)


def clamp_ste(x: jax.Array, hi: float) -> jax.Array:
    """``min(x, hi)`` forward, the gradient of ``x`` backward (fpo-control fpo.py clamp_ste)."""
    return x + jax.lax.stop_gradient(jnp.minimum(x, hi) - x)


def surrogate(ratio: jax.Array, adv: jax.Array, clip: float, mode: str) -> tuple[jax.Array, jax.Array]:
    """The policy loss of ``mode`` (ppo, spo, aspo; fpo-control fpo.py update) averaged over
    every ratio (``adv`` broadcast), and the fraction of ratios outside ``1 +- clip``."""
    if mode == "ppo":
        return clipped_surrogate(ratio, adv, clip)
    spo = -(ratio * adv - jnp.abs(adv) / (2.0 * clip) * (ratio - 1.0) ** 2)
    if mode == "aspo":
        ppo = -jnp.minimum(ratio * adv, jnp.clip(ratio, 1 - clip, 1 + clip) * adv)
        spo = jnp.where(adv > 0, ppo, spo)
    return spo.mean(), (jnp.abs(ratio - 1) > clip).mean()


def ema_decay(cfg: FPOConfig, update_index: jax.Array) -> jax.Array:
    """The EMA's decay after update ``update_index``: 0 (copy the policy) through the warm-up
    blocks, ``cfg.ema`` at the end of each later block of ``ema_every`` updates, 1 between
    (fpo-control on_policy_runner.py: reset at warm-up, then ``ema.update()`` per iteration)."""
    done = update_index + 1
    block_end = jnp.where(done % cfg.ema_every == 0, cfg.ema, 1.0)
    return jnp.where(done <= cfg.ema_warmup * cfg.ema_every, 0.0, block_end)


def make_fpo(cfg: FPOConfig, shapes: Shapes) -> OnPolicyAgent:
    """Build FPO (or FPO++, by its config) for one seed."""
    cfg.validate()
    model, denoiser, velocity = flow_policy(cfg, shapes.act_dim)
    critic = ValueHead(backbone_from(cfg.critic))
    opt = (lambda lr: optax.adamw(lr, weight_decay=cfg.weight_decay)) if cfg.weight_decay else optax.adam
    tx_actor, tx_critic = opt(cfg.lr_actor), opt(cfg.lr_critic)
    k, a_dim = cfg.num_mc, shapes.act_dim

    def init(key: jax.Array) -> PGState:
        ka, kc = jax.random.split(key)
        obs, act = jnp.zeros((1, shapes.obs_dim)), jnp.zeros((1, a_dim))
        pa = denoiser.init(ka, act, jnp.zeros((1,)), obs)["params"]
        pc = critic.init(kc, obs)["params"]
        if cfg.ema > 0:
            return EMAState(pa, pc, tx_actor.init(pa), tx_critic.init(pc), ema=pa)
        return PGState(pa, pc, tx_actor.init(pa), tx_critic.init(pc))

    def from_zero(params: dict, obs: jax.Array) -> jax.Array:
        """Euler from ``x_1 = 0`` over the model's grid, clipped to the box."""
        grid = model.time_grid(cfg.flow_steps)
        c = velocity.embed_cond(params, obs)
        e = velocity.embed_time(params, model.time_input(grid[:-1]))

        def step(x: jax.Array, xs: tuple) -> tuple[jax.Array, None]:
            t, s, e_t = xs
            return x + (s - t) * velocity.head(params, x, c, e_t), None

        x, _ = jax.lax.scan(step, jnp.zeros((obs.shape[0], a_dim)), (grid[:-1], grid[1:], e))
        return jnp.clip(x, -1.0, 1.0)

    def act(state: PGState, obs: jax.Array, key: jax.Array, deterministic: bool):
        k_sample, k_eps, k_t = jax.random.split(key, 3)
        n = obs.shape[0]
        if deterministic:  # FPO evaluates by sampling too: its flag only drops the noise it may
            params = state.ema if cfg.ema > 0 else state.actor  # add after sampling (feather_std)
            if cfg.eval_from_zero:
                return from_zero(params, obs), {}
            return model.sample(velocity, params, obs, k_sample, (n, a_dim)), {}
        action = model.sample(velocity, state.actor, obs, k_sample, (n, a_dim))
        if cfg.action_noise > 0:
            noise = normal(jax.random.fold_in(key, 3), action.shape)
            action = jnp.clip(action + cfg.action_noise * noise, -1.0, 1.0)
        eps = normal(k_eps, (n, k, a_dim))
        t = jax.random.uniform(k_t, (n, k))
        if cfg.cfm_t_margin > 0:
            t = cfg.cfm_t_margin + (1.0 - 2.0 * cfg.cfm_t_margin) * t
        return action, {"eps": eps, "t": t, "cfm": cfm_losses(model, velocity, state.actor, obs,
                                                               action, eps, t, cfg.cfm_loss)}

    def value(state: PGState, obs: jax.Array) -> jax.Array:
        return critic.apply({"params": state.critic}, obs)

    def loss_fn(params: tuple, batch: Rollout, key: jax.Array):
        pa, pc = params
        ex, old = batch.extras, batch.extras["cfm"]
        new = cfm_losses(model, velocity, pa, batch.obs, batch.action, ex["eps"], ex["t"],
                         cfg.cfm_loss)
        adv = standardise(batch.advantage) if cfg.normalize_advantage else batch.advantage
        if cfg.cfm_clamp > 0:
            old, new = jnp.minimum(old, cfg.cfm_clamp), jnp.minimum(new, cfg.cfm_clamp)
        if cfg.cfm_clamp_negative > 0:
            new = jnp.where(adv[:, None] < 0, jnp.minimum(new, cfg.cfm_clamp_negative), new)
        if cfg.ratio_mode == "mean":
            log_ratio = old.mean(-1) - new.mean(-1)
        else:
            log_ratio, adv = old - new, adv[:, None]
        if cfg.log_ratio_clamp > 0:
            log_ratio = clamp_ste(log_ratio, cfg.log_ratio_clamp)
        ratio = jnp.exp(log_ratio)
        policy_loss, clipped = surrogate(ratio, adv, cfg.clip, cfg.trust_region)
        v_loss = value_loss(critic, pc, batch.obs, batch.target, cfg.value_coef)
        return policy_loss + v_loss, {"policy_loss": policy_loss, "value_loss": v_loss,
                                      "clip_fraction": clipped, "ratio_mean": ratio.mean(),
                                      "cfm_loss": new.mean()}

    def update(state: PGState, batch: Rollout, key: jax.Array, update_index: jax.Array):
        pg = PGState(state.actor, state.critic, state.actor_opt, state.critic_opt)
        new, metrics = pg_step(pg, loss_fn, batch, key, tx_actor, tx_critic, cfg.max_grad_norm)
        if cfg.ema == 0:
            return new, metrics
        d = ema_decay(cfg, update_index)
        ema = jax.tree.map(lambda e, p: d * e + (1.0 - d) * p, state.ema, new.actor)
        return EMAState(new.actor, new.critic, new.actor_opt, new.critic_opt, ema=ema), metrics

    return OnPolicyAgent(init=init, act=act, value=value, update=update)


ALGO = AlgoInfo(
    name="fpo", family="policy_gradient", reference="previous", setting="on_policy",
    make=make_fpo, paper="McAllister et al. 2025, Flow Matching Policy Gradients", config=FPOConfig,
    follows="authors",
)
ALGO_PP = AlgoInfo(
    name="fpo_pp", family="policy_gradient", reference="previous", setting="on_policy",
    make=make_fpo, paper="Yi, Choi et al. 2026, Flow Policy Gradients for Robot Control (FPO++)",
    config=FPOPPConfig, follows="authors",
)
