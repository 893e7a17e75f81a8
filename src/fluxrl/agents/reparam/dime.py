"""DIME, Diffusion-Based Maximum Entropy RL (Celik, Li, Blessing et al. 2025, ICML, arXiv
2502.02316): soft actor-critic with a diffusion actor whose intractable ``log pi(a | s)`` is
replaced by an upper bound from the sampling chain (:mod:`fluxrl.guidance.path_entropy`): the log
prior density of the chain's start, plus per step the log-ratio of the denoising transition to the
model's noising transition, minus the tanh log-Jacobian. Reference policy: uniform (max entropy).

Faithful to the official code (ALRhub/DIME, ``diffusion/dime.py``, ``od/od_sampling.py``,
``configs/alg/dime.yaml``):

- a chain of ``diffusion_steps`` (16) stochastic Gaussian steps in an unbounded space, squashed by
  ``tanh``; its cost ``c(s, a)`` (the bound on ``log pi(a | s)`` above) enters everywhere SAC has
  ``log pi``;
- critic: ``r + gamma (1 - terminated) (Q'(s', a') - alpha c(s', a'))`` with ``a'`` a fresh chain
  sample of the current actor (DIME's target actor has ``policy_tau = 1``); the ensemble is
  reduced by its mean for targets and actor (``critic_agg = mean``); Adam with ``b1 = 0.5``;
- actor, every ``policy_delay`` (3) critic steps on update indices ``2, 5, 8, ...``, against the
  freshly updated critic: ``mean(alpha c(s, a(theta)) - Q(s, a(theta)))`` through the whole
  reparameterised chain, gradients element-wise clipped to 1 with NaNs zeroed;
- temperature right after each actor step: Adam (lr 1e-3) on ``log alpha`` against a target
  entropy, with the cost of that actor step; evaluation acts with one chain sample, as DIME.

Deliberate differences:

- the chain is this library's generative model (``algo.model``) sampled with its first-order step
  at ``eta = 1`` (DDPM posterior noise, ``ddpm_variance="posterior"``) on the model's grid for ``steps + 1`` steps without its
  final 0, so that every step is stochastic; DIME's own chain is an Euler-Maruyama discretised
  Ornstein-Uhlenbeck process (prior N(0, 2.5^2), cosine step sizes) with a learned step size and
  per-dimension friction. The denoiser is the library's (3 x 256 Mish, Fourier time embedding),
  not DIME's PIS-GRAD net. The chain is unit-scale with the x0 estimate clipped to [-1, 1] inside
  each step (VP / DDPM, as the rest of the library; its final state is not clipped), and the
  action is ``tanh(2.5 x)`` (``squash_scale``), so the spread before ``tanh`` matches DIME's
  N(0, 2.5^2) prior; without the x0 clip an untrained VP chain blows up (``1 / alpha`` at the
  prior: state std 1 -> ~95 over 5 steps);
- the step log-density of the chain enters by its conditional mean, not the sampled value
  (unbiased, same gradient, less noise; :mod:`fluxrl.guidance.path_entropy`);
- the critic is this library's plain ensemble (suite widths, 2 x 256 on Gym) with EMA target
  networks, not DIME's CrossQ critic (batch renormalisation, no target networks, 2 x 2048) with a
  101-atom categorical return distribution, which this library does not have;
- the target entropy is stated for the full bound: DIME targets ``4 act_dim`` for its running
  cost, which leaves out the log density of its prior (``-2.335 act_dim`` on average), i.e.
  ``log pi ~ 1.665 act_dim``; the default here is ``-1.665 act_dim`` on the entropy bound;
- DIME takes 2 gradient steps per environment step: run with ``updates_per_step=2`` for that.

Every model of ``fluxrl.generative.MODELS`` works (all are Gaussian paths with a first-order step);
discrete DDPM needs ``diffusion_steps`` below its 20 timesteps.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import struct

from fluxrl.agents.base import AlgoInfo, OffPolicyAgent, Shapes
from fluxrl.agents.common import adam_step, critic_step, generative_actor, soft_update, td_target
from fluxrl.agents.config import GenerativeConfig
from fluxrl.errors import FluxError
from fluxrl.generative import DDPM, MODELS, GenerativeModel, model_class
from fluxrl.generative import conversions as cv
from fluxrl.guidance.path_entropy import chain_log_ratio, stochastic_grid, tanh_log_det
from fluxrl.nets.backbones import backbone_from
from fluxrl.nets.critics import QEnsemble, aggregate

Array = jax.Array
#: DIME's temperature target on its running cost, per action dimension (ALRhub/DIME dime.py)
RUN_COST_TARGET = 4.0
#: mean log density of DIME's N(0, 2.5^2) chain prior, per dimension: -0.5 log(2 pi e 2.5^2)
PRIOR_LOG_DENSITY = -0.5 * math.log(2 * math.pi * math.e * 2.5**2)


@dataclass
class DIMEConfig(GenerativeConfig):
    """DIME (Celik et al. 2025): soft actor-critic with a chain-based entropy bound."""

    name: str = "dime"  #: algorithm name in the registry
    num_critics: int = 2  #: Q ensemble size (DIME dime.yaml critic.n_critics)
    critic_agg: str = "mean"  #: ensemble reduction for targets and the actor (DIME dime.py: mean of the two critics)
    lr_actor: float = 3e-4  #: denoiser Adam lr (DIME dime.yaml optimizer.lr_actor)
    lr_critic: float = 3e-4  #: critic Adam lr (DIME dime.yaml optimizer.lr_critic)
    adam_b1: float = 0.5  #: Adam beta1 of actor and critic (DIME dime.yaml optimizer.b1, from CrossQ)
    diffusion_steps: int = 16  #: stochastic denoising steps of the chain (DIME dime.yaml actor.diff_steps)
    ddpm_variance: str = "posterior"  #: noise of each chain step of a VP model: posterior (beta-tilde, this library's choice; DIME's own chain is an Ornstein-Uhlenbeck discretisation, not a DDPM step) or beta; the chain's log-density uses the same std either way
    policy_delay: int = 3  #: critic steps per actor and temperature step (DIME dime.yaml policy_delay)
    actor_grad_clip: float = 1.0  #: element-wise clip of the actor gradient (DIME dime.yaml actor_grad_clip)
    init_alpha: float = 1.0  #: initial temperature (DIME dime.yaml ent_coef.init)
    lr_alpha: float = 1e-3  #: Adam lr of log alpha (DIME dime.py, hard-coded)
    squash_scale: float = 2.5  #: actions are tanh(squash_scale x) of the chain's unit-scale output x, so that x ~ N(0, 1) spreads like DIME's N(0, 2.5^2) prior before tanh (DIME od/dis.yaml init_std)
    target_entropy: float | None = None  #: None means -1.665 act_dim: DIME's 4 act_dim running-cost target plus its prior's mean log density (-2.335 act_dim)

    def validate(self) -> None:
        """DIME-specific checks (:func:`fluxrl.config.resolve` calls this)."""
        super().validate()
        if self.policy_delay < 1:
            raise FluxError(f"algo.policy_delay must be at least 1, got {self.policy_delay}")
        for key in ("lr_alpha", "init_alpha", "actor_grad_clip", "squash_scale"):
            v = getattr(self, key)
            if not (math.isfinite(v) and v > 0):
                raise FluxError(f"algo.{key} must be a positive number, got {v}")
        if not (math.isfinite(self.adam_b1) and 0 <= self.adam_b1 < 1):
            raise FluxError(f"algo.adam_b1 must lie in [0, 1), got {self.adam_b1}")
        if self.target_entropy is not None and not math.isfinite(self.target_entropy):
            raise FluxError(f"algo.target_entropy must be a finite number, or null for -1.665 "
                            f"act_dim, got {self.target_entropy}")
        if issubclass(model_class(self.model), DDPM):
            timesteps = MODELS[self.model]().timesteps
            if self.diffusion_steps >= timesteps:
                raise FluxError(f"algo.diffusion_steps={self.diffusion_steps} is too many for "
                                f"algo.model={self.model!r}: DIME's chain stops one grid point "
                                f"before t = 0, so it needs fewer than its {timesteps} timesteps")


def first_order(model: GenerativeModel) -> str:
    """The model's first-order sampler (one Gaussian transition per step with ``eta > 0``)."""
    return next(m for m, (order, _) in model.methods.items() if order == 1)


def x0_clip(model: GenerativeModel) -> Callable[[Array, Array, Array], Array] | None:
    """A sampler ``guide`` that clips the ``x0`` estimate to [-1, 1] inside every step when the
    model asks for it (``clip_denoised``: VP / DDPM, whose ``x0 = (x - sigma eps) / alpha`` blows
    up near the prior), while the chain's final state stays unclipped, so every transition stays
    Gaussian."""
    if not getattr(model, "clip_denoised", False):
        return None

    def guide(pred: Array, x: Array, t: Array) -> Array:
        a, s = model.alpha_sigma(t)
        x0 = jnp.clip(model.to_x0(pred, x, t), -1.0, 1.0)
        return model.join(x0, cv.x0_to_eps(x0, x, a, s), t)

    return guide


def squashed_chain(model: GenerativeModel, actor: Any, params: Any, obs: Array, key: Array,
                   grid: Array, act_dim: int, differentiable: bool = False,
                   scale: float = 1.0) -> tuple[Array, Array]:
    """``(a, c)``: ``a = tanh(scale x_N)`` ``[B, A]`` from the chain on ``grid`` at ``eta = 1``
    (its final state is not clipped) and its cost ``c`` ``[B]``, the upper-bound estimate of ``log
    pi(a | s)``: the chain log-ratio minus the log-Jacobian of ``x -> tanh(scale x)``."""
    x, hist = model.sample(actor, params, obs, key, obs.shape[:-1] + (act_dim,),
                           method=first_order(model), eta=1.0, grid=grid, clip=False,
                           guide=x0_clip(model), differentiable=differentiable,
                           return_history=True)
    log_det = tanh_log_det(scale * x) + act_dim * math.log(scale)
    return jnp.tanh(scale * x), chain_log_ratio(model, hist, grid) - log_det


def dime_actor_loss(actor_params: Any, model: GenerativeModel, actor: Any, grid: Array,
                    q_value: Callable[[Array], Array], obs: Array, key: Array, act_dim: int,
                    alpha: Array, scale: float = 1.0) -> tuple[Array, Array]:
    """``mean(alpha c(s, a) - Q(s, a))`` with ``a(theta)`` differentiated through every step of
    the chain; ``q_value(a) -> [B]`` is the reduced critic (a constant here). Returns the loss and
    the mean cost (minus the entropy bound)."""
    a, cost = squashed_chain(model, actor, actor_params, obs, key, grid, act_dim, True, scale)
    return jnp.mean(alpha * cost - q_value(a)), cost.mean()


@struct.dataclass
class DIMEState:
    actor: dict
    critic: dict
    target: dict
    log_alpha: Array
    entropy: Array  #: the last entropy bound (logged)
    actor_opt: optax.OptState
    critic_opt: optax.OptState
    alpha_opt: optax.OptState


def make_dime(cfg: DIMEConfig, shapes: Shapes) -> OffPolicyAgent:
    """Build DIME's pure functions for one seed."""
    cfg.validate()
    model, actor = generative_actor(cfg, shapes.act_dim)
    grid = stochastic_grid(model, cfg.diffusion_steps)
    critic = QEnsemble(backbone_from(cfg.critic), cfg.num_critics)
    tx_actor = optax.chain(optax.zero_nans(), optax.clip(cfg.actor_grad_clip),
                           optax.adam(cfg.lr_actor, b1=cfg.adam_b1))
    tx_critic = optax.flatten(optax.adam(cfg.lr_critic, b1=cfg.adam_b1))
    tx_alpha = optax.adam(cfg.lr_alpha)
    target_entropy = (-(RUN_COST_TARGET + PRIOR_LOG_DENSITY) * shapes.act_dim
                      if cfg.target_entropy is None else cfg.target_entropy)

    def chain(params: Any, obs: Array, key: Array, shape: tuple) -> Array:
        x = model.sample(actor, params, obs, key, shape, method=first_order(model), eta=1.0,
                         grid=grid, clip=False, guide=x0_clip(model))
        return jnp.tanh(cfg.squash_scale * x)

    def init(key: Array) -> DIMEState:
        ka, kc = jax.random.split(key)
        obs, act = jnp.zeros((1, shapes.obs_dim)), jnp.zeros((1, shapes.act_dim))
        pa = actor.init(ka, act, jnp.zeros((1,)), obs)["params"]
        pc = critic.init(kc, obs, act)["params"]
        log_alpha = jnp.log(jnp.asarray(cfg.init_alpha, jnp.float32))
        return DIMEState(pa, pc, pc, log_alpha, jnp.float32(0.0), tx_actor.init(pa),
                         tx_critic.init(pc), tx_alpha.init(log_alpha))

    def act(state: DIMEState, obs: Array, key: Array, deterministic: bool) -> Array:
        # DIME acts, and evaluates, with one sample of the stochastic chain
        return chain(state.actor, obs, key, obs.shape[:-1] + (shapes.act_dim,))

    def sample(state: DIMEState, obs: Array, key: Array, n: int) -> Array:
        shape = obs.shape[:-1] + (n, shapes.act_dim)
        return chain(state.actor, obs[..., None, :], key, shape)

    def q_value(params: dict, obs: Array, a: Array) -> Array:
        return aggregate(critic.apply({"params": params}, obs, a), cfg.critic_agg)

    def value(state: DIMEState, obs: Array, a: Array) -> Array:
        return q_value(state.critic, obs, a)

    def update(state: DIMEState, batch: dict, key: Array, update_index: Array):
        k_next, k_actor = jax.random.split(key)
        alpha = jnp.exp(state.log_alpha)
        next_a, next_cost = squashed_chain(model, actor, state.actor, batch["next_obs"], k_next,
                                           grid, shapes.act_dim, scale=cfg.squash_scale)
        next_v = q_value(state.target, batch["next_obs"], next_a) - alpha * next_cost
        target = td_target(batch["reward"], batch["terminated"], cfg.discount, next_v)
        pc, critic_opt, c_loss, q_mean = critic_step(critic, state.critic, state.critic_opt,
                                                     tx_critic, batch, target)
        new = state.replace(critic=pc, critic_opt=critic_opt,
                            target=soft_update(state.target, pc, cfg.tau))

        def actor_step(s: DIMEState) -> tuple[DIMEState, Array]:
            (a_loss, cost), g = jax.value_and_grad(dime_actor_loss, has_aux=True)(
                s.actor, model, actor, grid, lambda a: q_value(s.critic, batch["obs"], a),
                batch["obs"], k_actor, shapes.act_dim, alpha, cfg.squash_scale)
            pa, actor_opt = adam_step(s.actor, s.actor_opt, g, tx_actor)
            entropy = -jax.lax.stop_gradient(cost)
            ga = jax.grad(lambda la: jnp.exp(la) * (entropy - target_entropy))(s.log_alpha)
            log_alpha, alpha_opt = adam_step(s.log_alpha, s.alpha_opt, ga, tx_alpha)
            return s.replace(actor=pa, actor_opt=actor_opt, log_alpha=log_alpha,
                             alpha_opt=alpha_opt, entropy=entropy), a_loss

        new, a_loss = jax.lax.cond((update_index + 1) % cfg.policy_delay == 0, actor_step,
                                   lambda s: (s, jnp.zeros((), jnp.float32)), new)
        # actor_loss is 0 on critic-only steps, so its logged mean is scaled by 1 / policy_delay
        metrics = {"critic_loss": c_loss, "actor_loss": a_loss, "q_mean": q_mean,
                   "alpha": jnp.exp(new.log_alpha), "entropy": new.entropy,
                   "next_cost": next_cost.mean(), "next_action_abs": jnp.abs(next_a).mean()}
        return new, metrics

    return OffPolicyAgent(init, act, update, value, sample)


#: this algorithm's entry in the registry (fluxrl.agents.registry)
ALGO = AlgoInfo("dime", "reparam", "uniform", "off_policy", make_dime,
                "Celik et al. 2025, DIME: Diffusion-Based Maximum Entropy Reinforcement Learning",
                DIMEConfig, follows="authors")
