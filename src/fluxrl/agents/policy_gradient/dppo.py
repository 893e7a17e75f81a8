"""Diffusion Policy Policy Optimization (Ren et al. 2024, arXiv 2409.00588): PPO on the denoising
MDP of a DDPM policy, whose every denoising step is a Gaussian with a tractable likelihood.

Follows the authors' code (irom-lab/dppo at 7b10df6: ``model/diffusion/diffusion_ppo.py``,
``diffusion_vpg.py``, ``diffusion.py``, ``agent/finetune/train_ppo_diffusion_agent.py``):

- acting runs the DDPM chain ``x_K -> .. -> x_0`` and stores it (the last ``ft_denoising_steps
  + 1`` states) in the extras; each step ``p(x_{k-1} | x_k) = N(mu, sigma^2)`` has the posterior
  mean of the clipped ``x0`` estimate and std ``beta-tilde^(1/2)`` floored at
  ``min_sampling_std`` (0.1, also on the last step, whose own std is 0); its unit noise is
  clipped to ``+-randn_clip``; the evaluation chain keeps the schedule's std floored at 1e-3 and
  ends without noise (``VPGDiffusion.forward``, ``deterministic=True``);
- the likelihood of a step is the Gaussian log-density of the stored transition under the current
  network, std floored at ``min_logprob_std`` (0.1), clamped elementwise to [-5, 2] and averaged
  over action dimensions (``get_logprobs``, ``PPODiffusion.loss``);
- the loss is PPO's clipped surrogate per denoising step ``k = 0 .. K-1`` (0 the noisiest), the
  advantage weighted by ``gamma_denoising^(K-1-k)`` and the clip ``eps_k = base + (eps - base)
  (e^(rate k/(K-1)) - 1) / (e^rate - 1)`` (``clip_schedule="dppo"``) or ``eps`` for every step
  (``"constant"``, as typoverflow/flow-rl ``flowrl/agent/online/dppo.py`` at bae22f4, whose DPPO
  also sums the log-density over dimensions before the clamp, uses std ``beta^(1/2)``, no
  sampling floor and an ELU critic); no entropy.
- ``ft_denoising_steps < K`` runs the first ``K - ft`` steps with the frozen initial network, as
  DPPO's ``actor`` (a copy of the pre-trained, here the initial, network) and trains only the last.

The model is fluxrl's DDPM (:mod:`fluxrl.generative.diffusion`, ``timesteps = steps = K``,
cosine, ``ddpm_variance="posterior"``, ``clip_denoised``): its alpha-bar table equals DPPO's
``cosine_beta_schedule`` and its eta-1 step mean equals DPPO's ``ddpm_mu_coef1 x0 + ddpm_mu_coef2
x_t`` (tests/test_dppo.py checks both by hand). Defaults: the paper's Table 4 where it gives one
(3 x 256 Mish actor and critic, 10 steps, time embedding 32, clip 0.2, no entropy, actor lr 1e-4,
critic lr 1e-3, gradient norm 1.0); DPPO's code for the rest (std floors, clamp, gamma_denoising
0.99, clip base 1e-3 and rate 3, randn_clip 3, all steps trained as in its from-scratch configs
``cfg/gym/finetune/*/ppo_diffusion_mlp.yaml``). Differences from DPPO's code:

- Table 4 over DPPO's Gym from-scratch config: 10 denoising steps (DPPO 20), time embedding 32
  (16), clip 0.2 (0.1; 0.01 fine-tuning), actor 3 x 256 Mish (3 x 512 ReLU residual MLP), critic
  3 x 256 Mish MLP (residual), gradient norm 1.0 (none); the FlowRL setting is IsaacLab's.
- The clip schedule's base 1e-3 is ``PPODiffusion``'s default (and its furniture / robomimic
  configs'); its Gym configs set ``clip_ploss_coef_base = clip_ploss_coef``, a flat schedule:
  ``clip_base=0.2`` (or ``clip_schedule=constant``) gives that.
- The denoiser is fluxrl's (learned Fourier features of ``t = i / K`` and a time MLP, summed
  into the first layer), DPPO's ``DiffusionMLP`` a sinusoidal embedding of the integer step
  concatenated to the input; no action chunks (DPPO Gym from scratch: horizon 1 as here).
- Executed actions are ``x_0`` clipped to [-1, 1]; the chain keeps the unclipped ``x_0`` (no DPPO
  config sets ``final_action_clip_value``). The old log-probabilities are taken at acting (DPPO
  recomputes them after the rollout with the same parameters: the same numbers).
- Not offered: the ``target_kl`` early stop of the epochs (DPPO Gym: 1), the running reward scaler,
  the lr warm-up, DDIM and a learned eta, the BC loss, advantage quantile clipping and value
  clipping (off in DPPO's Gym configs); the trainer's GAE bootstraps a truncated step from its
  last observation and runs Table 4's 4 epochs x 4 minibatches (DPPO Gym: 10 epochs, batch 1000).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
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
from fluxrl.generative import conversions as cv
from fluxrl.generative import make_model
from fluxrl.generative.base import Network, as_network
from fluxrl.nets.backbones import backbone_from
from fluxrl.nets.denoiser import make_denoiser
from fluxrl.rng import normal

LOG_PROB_CLAMP = (-5.0, 2.0)  #: elementwise clamp of every step's log-density (diffusion_ppo.py loss)
EVAL_MIN_STD = 1e-3  #: std floor of the evaluation chain's steps before the last (diffusion_vpg.py forward)
CLIP_SCHEDULES = ("dppo", "constant")


def mish_net() -> NetConfig:
    """3 x 256 Mish (paper Table 4, DPPO actor and critic)."""
    return NetConfig(width=256, depth=3, act="mish")


@dataclass
class DPPOConfig(PolicyGradientConfig):
    """DPPO: PPO per denoising step of a DDPM policy (paper Table 4; irom-lab/dppo for the rest)."""

    name: str = "dppo"  #: algorithm name in the registry
    actor: NetConfig = field(default_factory=mish_net)  #: denoiser, depth counting its fused input layer (paper Table 4: 3 x 256 Mish)
    critic: NetConfig = field(default_factory=mish_net)  #: value network (paper Table 4: 3 x 256 Mish; DPPO CriticObs Mish)
    clip: float = 0.2  #: PPO clip of the last denoising step (paper Table 4; DPPO Gym from scratch 0.1)
    clip_schedule: str = "dppo"  #: per-step clip: dppo (exponential from clip_base to clip, diffusion_ppo.py) | constant (clip for every step, flow-rl dppo.py)
    clip_base: float = 1e-3  #: clip of the first (noisiest) step under the dppo schedule (diffusion_ppo.py clip_ploss_coef_base default)
    clip_rate: float = 3.0  #: rate of the exponential clip schedule (diffusion_ppo.py clip_ploss_coef_rate)
    gamma_denoising: float = 0.99  #: advantage of step k weighted by gamma_denoising^(K-1-k) (DPPO Gym configs)
    denoising_steps: int = 10  #: DDPM timesteps, all sampled (paper Table 4; DPPO Gym 20)
    ft_denoising_steps: int | None = None  #: last steps trained, the rest frozen at init; None = all (DPPO from-scratch configs; its Gym fine-tuning: 10 of 20)
    time_dim: int = 32  #: time-embedding size (paper Table 4; DPPO Gym 16)
    fourier_scale: float = 1.0  #: init std of the denoiser's learned Fourier frequencies (fluxrl.nets.denoiser default)
    min_sampling_std: float = 0.1  #: std floor of every acting step (DPPO min_sampling_denoising_std)
    min_logprob_std: float = 0.1  #: std floor of the likelihood (DPPO min_logprob_denoising_std)
    randn_clip: float = 3.0  #: each step's unit noise clipped to +-this (DPPO Gym randn_clip_value)

    def validate(self) -> None:
        """Shared checks plus the chain's sizes, floors and clip schedule."""
        super().validate()
        for key in ("denoising_steps", "time_dim"):
            if getattr(self, key) < 1:
                raise FluxError(f"algo.{key} must be at least 1, got {getattr(self, key)}")
        if self.time_dim % 2:
            raise FluxError(f"algo.time_dim must be even (cos and sin halves), got {self.time_dim}")
        ft = self.ft_denoising_steps
        if ft is not None and not 1 <= ft <= self.denoising_steps:
            raise FluxError(f"algo.ft_denoising_steps must lie in [1, denoising_steps="
                            f"{self.denoising_steps}] (or null for all), got {ft}")
        if self.clip_schedule not in CLIP_SCHEDULES:
            raise FluxError(f"unknown algo.clip_schedule={self.clip_schedule!r}; choose one of: "
                            + ", ".join(CLIP_SCHEDULES))
        if not 0.0 < self.clip_base < 1.0:
            raise FluxError(f"algo.clip_base must lie in (0, 1), got {self.clip_base}")
        if not 0.0 < self.gamma_denoising <= 1.0:
            raise FluxError(f"algo.gamma_denoising must lie in (0, 1], got {self.gamma_denoising}")
        for key in ("clip_rate", "fourier_scale", "min_logprob_std", "randn_clip"):
            if not (math.isfinite(getattr(self, key)) and getattr(self, key) > 0):
                raise FluxError(f"algo.{key} must be positive, got {getattr(self, key)}")
        if not (math.isfinite(self.min_sampling_std) and self.min_sampling_std >= 0):
            raise FluxError(f"algo.min_sampling_std must be zero or positive, got {self.min_sampling_std}")

    @property
    def ft_steps(self) -> int:
        """The number of trained (last) denoising steps."""
        return self.denoising_steps if self.ft_denoising_steps is None else self.ft_denoising_steps


@struct.dataclass
class DPPOState(PGState):
    """:class:`PGState` plus the frozen initial denoiser of the untrained first steps (None when
    every step is trained)."""

    base: Any = None


def gaussian_log_density(x: jax.Array, mean: jax.Array, std: jax.Array) -> jax.Array:
    """Elementwise ``log N(x; mean, std^2)``."""
    return -0.5 * ((x - mean) / std) ** 2 - jnp.log(std) - 0.5 * math.log(2 * math.pi)


def clip_schedule(kind: str, clip: float, base: float, rate: float, steps: int) -> np.ndarray:
    """``[steps]`` clips, step 0 the noisiest: DPPO's ``base + (clip - base) (e^(rate k/(n-1)) -
    1) / (e^rate - 1)`` (``clip`` alone for one step), or ``clip`` for every step."""
    if kind == "constant" or steps == 1:
        return np.full(steps, clip, np.float32)
    frac = (np.exp(rate * np.arange(steps) / (steps - 1)) - 1) / (math.exp(rate) - 1)
    return (base + (clip - base) * frac).astype(np.float32)


def denoising_discount(gamma: float, steps: int) -> np.ndarray:
    """``gamma^(steps-1-k)`` for ``k = 0 .. steps-1``: the last (action-producing) step weighs 1."""
    return (gamma ** np.arange(steps - 1, -1, -1)).astype(np.float32)


def step_mean_std(model: Any, net: Network, params: Any, x: jax.Array, t: jax.Array, s: jax.Array,
                  c: Any, e: Any) -> tuple[jax.Array, jax.Array]:
    """Mean and std of the DDPM step from time ``t`` to ``s < t`` (``t, s`` broadcast against
    ``x``): the eta-1 step of ``model`` on its clipped ``x0`` estimate."""
    a_t, s_t = model.alpha_sigma(t)
    x0, _ = model.split(net.head(params, x, c, e), x, t)
    x0 = jnp.clip(x0, -1.0, 1.0)
    eps = cv.x0_to_eps(x0, x, a_t, s_t)
    a_s, s_s = model.alpha_sigma(s)
    dev, std = model.step_std(t, s, 1.0)
    return a_s * x0 + jnp.sqrt(jnp.maximum(s_s**2 - dev**2, 0.0)) * eps, std


def dppo_policy(cfg: DPPOConfig, act_dim: int) -> tuple[Any, Any, Network]:
    """The DDPM (``timesteps = steps = denoising_steps``, cosine, posterior variance), the
    denoiser module, and the denoiser as a :class:`Network`."""
    model = make_model("ddpm", timesteps=cfg.denoising_steps, steps=cfg.denoising_steps,
                       ddpm_variance="posterior")
    net = cfg.actor
    denoiser = make_denoiser(act_dim, net.backbone, net.width, net.depth, net.act, net.layer_norm,
                             cfg.time_dim, fourier_scale=cfg.fourier_scale)
    return model, denoiser, as_network(denoiser)


def chain_log_probs(model: Any, network: Network, params: Any, obs: jax.Array, chain: jax.Array,
                    t: jax.Array, s: jax.Array, min_std: float) -> jax.Array:
    """``[B, n]`` log-probabilities of the transitions of ``chain [B, n + 1, A]``, step ``k`` from
    time ``t[k]`` to ``s[k]``: the Gaussian log-density with std floored at ``min_std``, clamped
    elementwise to :data:`LOG_PROB_CLAMP`, averaged over action dimensions."""
    c = network.embed_cond(params, obs)[:, None]
    e = network.embed_time(params, model.time_input(t))
    mean, std = step_mean_std(model, network, params, chain[:, :-1], t[:, None], s[:, None], c, e)
    lp = gaussian_log_density(chain[:, 1:], mean, jnp.maximum(std, min_std))
    return jnp.clip(lp, *LOG_PROB_CLAMP).mean(-1)


def make_dppo(cfg: DPPOConfig, shapes: Shapes) -> OnPolicyAgent:
    """Build DPPO for one seed."""
    cfg.validate()
    k_all, ft, a_dim = cfg.denoising_steps, cfg.ft_steps, shapes.act_dim
    model, denoiser, network = dppo_policy(cfg, a_dim)
    critic = ValueHead(backbone_from(cfg.critic))
    tx_actor, tx_critic = optax.adam(cfg.lr_actor), optax.adam(cfg.lr_critic)
    grid = model.time_grid(k_all)  # [K + 1] times, 1 .. 0
    t_ft, s_ft = grid[k_all - ft:-1], grid[k_all - ft + 1:]  # the trained steps
    clips = jnp.asarray(clip_schedule(cfg.clip_schedule, cfg.clip, cfg.clip_base, cfg.clip_rate, ft))
    discount = jnp.asarray(denoising_discount(cfg.gamma_denoising, ft))

    def init(key: jax.Array) -> DPPOState:
        ka, kc = jax.random.split(key)
        obs, act = jnp.zeros((1, shapes.obs_dim)), jnp.zeros((1, a_dim))
        pa = denoiser.init(ka, act, jnp.zeros((1,)), obs)["params"]
        pc = critic.init(kc, obs)["params"]
        return DPPOState(pa, pc, tx_actor.init(pa), tx_critic.init(pc), pa if ft < k_all else None)

    def run_chain(params: Any, obs: jax.Array, x: jax.Array, keys: jax.Array, t: jax.Array,
                  s: jax.Array, deterministic: bool) -> tuple[jax.Array, jax.Array]:
        """Steps ``t -> s`` from ``x``: the last state, and the states ``[steps, n, A]`` and
        log-probabilities ``[steps, n]`` of every step."""
        c, e = network.embed_cond(params, obs), network.embed_time(params, model.time_input(t))

        def body(x: jax.Array, xs: tuple) -> tuple[jax.Array, tuple]:
            t_i, s_i, e_i, k_i = xs
            mean, std = step_mean_std(model, network, params, x, t_i, s_i, c, e_i)
            if deterministic:
                std_act = jnp.where(s_i > 0, jnp.maximum(std, EVAL_MIN_STD), 0.0)
            else:
                std_act = jnp.maximum(std, cfg.min_sampling_std)
            z = jnp.clip(normal(k_i, x.shape), -cfg.randn_clip, cfg.randn_clip)
            x_new = mean + std_act * z
            lp = gaussian_log_density(x_new, mean, jnp.maximum(std, cfg.min_logprob_std))
            return x_new, (x_new, jnp.clip(lp, *LOG_PROB_CLAMP).mean(-1))

        return jax.lax.scan(body, x, (t, s, e, keys))

    def act(state: DPPOState, obs: jax.Array, key: jax.Array, deterministic: bool):
        k0, ks = jax.random.split(key)
        keys = jax.random.split(ks, k_all)
        x = normal(k0, (obs.shape[0], a_dim))
        p = jax.lax.stop_gradient(state.actor)
        if ft < k_all:
            x, _ = run_chain(jax.lax.stop_gradient(state.base), obs, x, keys[:k_all - ft],
                             grid[:k_all - ft], grid[1:k_all - ft + 1], deterministic)
        x_start = x
        x, (hist, log_prob) = run_chain(p, obs, x, keys[k_all - ft:], t_ft, s_ft, deterministic)
        action = jnp.clip(x, -1.0, 1.0)
        if deterministic:
            return action, {}
        chain = jnp.concatenate([x_start[:, None], jnp.swapaxes(hist, 0, 1)], axis=1)
        return action, {"chain": chain, "log_prob": log_prob.T}

    def value(state: DPPOState, obs: jax.Array) -> jax.Array:
        return critic.apply({"params": state.critic}, obs)

    def loss_fn(params: tuple, batch: Rollout, key: jax.Array):
        pa, pc = params
        new = chain_log_probs(model, network, pa, batch.obs, batch.extras["chain"], t_ft, s_ft,
                              cfg.min_logprob_std)
        log_ratio = new - batch.extras["log_prob"]
        ratio = jnp.exp(log_ratio)
        adv = standardise(batch.advantage) if cfg.normalize_advantage else batch.advantage
        policy_loss, clipped = clipped_surrogate(ratio, adv[:, None] * discount, clips)
        v_loss = value_loss(critic, pc, batch.obs, batch.target, cfg.value_coef)
        return policy_loss + v_loss, {"policy_loss": policy_loss, "value_loss": v_loss,
                                      "clip_fraction": clipped, "ratio_mean": ratio.mean(),
                                      "approx_kl": (ratio - 1 - log_ratio).mean(),
                                      "log_prob": new.mean()}

    def update(state: DPPOState, batch: Rollout, key: jax.Array, update_index: jax.Array):
        del update_index  # no schedule
        pg = PGState(state.actor, state.critic, state.actor_opt, state.critic_opt)
        pg, metrics = pg_step(pg, loss_fn, batch, key, tx_actor, tx_critic, cfg.max_grad_norm)
        return DPPOState(pg.actor, pg.critic, pg.actor_opt, pg.critic_opt, state.base), metrics

    return OnPolicyAgent(init=init, act=act, value=value, update=update)


ALGO = AlgoInfo(
    name="dppo", family="policy_gradient", reference="previous", setting="on_policy",
    make=make_dppo, paper="Ren et al. 2024, Diffusion Policy Policy Optimization", config=DPPOConfig,
    follows="authors",
)
