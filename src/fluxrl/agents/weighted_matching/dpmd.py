"""Diffusion Policy Mirror Descent (Ma et al. 2025, arXiv 2502.00361): policy mirror descent with a
diffusion actor. The mirror-descent step ``pi_k ~ pi_{k-1} exp(Q / lambda)`` is fitted by weighted
matching: particles drawn from a frozen copy of the previous policy ``pi_{k-1}`` (refreshed every
``refresh_every`` updates) are weighted by the critic, and the actor's denoising loss on those
particles is weighted accordingly. The temperature ``lambda`` is tuned so the weights stay
``target_kl`` nats (measured as ``KL(w || uniform)``) away from uniform.

Faithful to flow-rl ``agent/online/dpmd.py`` with ``mujoco/algo/dpmd.yaml`` at b1385e0 (the
paper's v1: linear reweighting, target KL 2.5, additive noise 0.2; protocol.md section 3), in the
same update order (flow-rl's newer bae22f4 keeps only exp reweighting in ``dpmd.py``, with target
KL 2.0, Hopper 3.0, Ant 1.0; its linear variant moved to ``gempo.py``):

- critic: clipped double Q; the next action is one sample of the current actor, no entropy term;
- particles: ``num_particles`` samples per state of the reference policy ``pi_{k-1}`` plus
  ``N(0, particle_noise^2)`` noise (not clipped), valued by the online critics as they were
  *before* this step's critic update, reduced by their ensemble mean (paper A.3's "additive
  noise 0.2" is this particle noise; acting adds none);
- weights: linear advantage reweighting ``w = max((Q - c) / lambda, 0)``, ``sum w = 1`` per state
  (the simplex projection of ``Q / lambda``, :mod:`fluxrl.guidance.weights`), then scaled by N;
  ``exp`` and ``square`` reweightings and a ``negative_bound`` floor are the official options;
- actor: the model's denoising loss on the particles, each squared error clipped at ``loss_clip``
  (flow-rl: 3.0; earlier flow-rl revisions did not clip), weighted by ``w``;
- temperature: ``lambda = exp(log lambda)``, Adam on ``lambda (target_kl - KL(w || uniform))``
  with the KL of this step's weights (``target_kl = None`` keeps ``lambda`` fixed);
- then the target critics move by EMA, and at every update whose global index is a multiple of
  ``refresh_every`` the reference becomes a copy of the new actor;
- acting: one plain policy sample (no added noise) while training; at evaluation the best of 10
  samples by the min of the online critics (the trainer's ``best_of_eval``).

Deliberate differences: every generative model of :data:`fluxrl.generative.MODELS` works (the loss
clip is in the units of the model's regression target: noise for diffusion, velocity for flow,
the preconditioned target for EDM); flow-rl only has the cosine VP diffusion (``vp-cosine``, the
default). The refresh counts the trainer's global update index, which starts at the warmup, where
flow-rl counts from the first update (the refresh period is the same). ``particle_noise`` is 0.2,
and 0.1 on Ant as paper A.3 states (a row of :mod:`fluxrl.task_defaults`); flow-rl b1385e0's
``dpmd.yaml`` lists ``additive_noise_dict {Ant-v5: 0.1}`` but never reads it, so flow-rl ran 0.2
on Ant. The sampler injects ``sqrt(beta_i)`` noise per step (``ddpm_variance="beta"``, flow-rl
``ContinuousDDPM``).

Departures of flow-rl (and so of this file) from the authors' code
(mahaitongdae/diffusion_policy_online_rl at a50cf41, ``relax/algorithm/dpmd.py``):

- proposal: the authors keep no frozen ``pi_{k-1}``: they weight one sample of the online policy at
  the next state (best of 32 plus noise); flow-rl uses 64 particles of a reference copied every
  1000 updates, plus N(0, 0.2^2);
- weights: the authors ``exp(clip(Q - m / s, -3, 3) / alpha)`` with running statistics; flow-rl
  linear (exp and square as options), normalised per state;
- temperature: the authors tune ``alpha`` by a Gaussian-noise entropy rule (every 250 updates,
  from 5); flow-rl by the weights' KL from uniform (from 1, lr 3e-4, target 2.5);
- loss: the authors' weighted squared error is not clipped; flow-rl clips each term at 3.0;
- critic: the authors apply the critic's Adam step twice per update and scale rewards by 0.2;
  flow-rl once, unscaled;
- acting: the authors act with the EMA target policy, best of 32 (plus noise while training);
  flow-rl one plain sample, the best of 10 at evaluation;
- delays and lr: the authors update the policy and targets every 2 steps and decay the actor lr
  linearly; flow-rl every step, actor lr 1e-4 constant.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import optax
from flax import struct

from fluxrl.agents.base import AlgoInfo, OffPolicyAgent, Shapes
from fluxrl.agents.common import GenerativeACState, GenerativeActorCritic, adam_step, soft_update
from fluxrl.agents.config import GenerativeConfig
from fluxrl.errors import FluxError
from fluxrl.guidance.weights import REWEIGHTS, kl_from_uniform, particle_weights
from fluxrl.nets.critics import AGGREGATIONS
from fluxrl.rng import normal

Array = jax.Array


@dataclass
class DPMDConfig(GenerativeConfig):
    """DPMD (Ma et al. 2025): fit pi_k ~ pi_{k-1} exp(Q / lambda) by weighted denoising on particles."""

    name: str = "dpmd"  #: algorithm name in the registry
    lr_actor: float = 1e-4  #: denoiser Adam lr, constant (paper A.3; flow-rl b1385e0 dpmd.yaml diffusion.lr)
    lr_critic: float = 3e-4  #: critic Adam lr (paper A.3; flow-rl b1385e0 dpmd.yaml critic_lr)
    model: str = "vp-cosine"  #: generative model, any of fluxrl.generative.MODELS (flow-rl dpmd.py ContinuousDDPM, cosine)
    best_of_eval: int = 10  #: evaluation takes the best of this many samples by the online critics' min (flow-rl b1385e0 dpmd.yaml num_samples)
    num_particles: int = 64  #: samples of the reference policy per state that the weights spread over (paper A.3; flow-rl num_particles)
    particle_noise: float = 0.2  #: std of Gaussian noise added to the particles (paper A.3 "additive noise 0.2"; flow-rl mujoco dpmd.yaml additive_noise; Ant 0.1 via fluxrl.task_defaults)
    reweight: str = "linear"  #: particle weights from Q: linear | exp | square (paper A.3: linear; flow-rl b1385e0 dpmd.yaml reweight; bae22f4 has exp only)
    target_kl: float | None = 2.5  #: KL(weights || uniform) the temperature is tuned to; None keeps it fixed (paper A.3; flow-rl b1385e0 dpmd.yaml target_kl 2.5; bae22f4: 2.0, Hopper 3.0, Ant 1.0)
    init_temp: float = 1.0  #: initial temperature lambda (flow-rl dpmd.py DPMDAgent PositiveTunableCoefficient(init_value=1.0), not a config key)
    lr_temp: float = 3e-4  #: Adam lr of log lambda (flow-rl b1385e0 dpmd.yaml temp_lr)
    refresh_every: int = 1000  #: updates between copies of the actor into the reference policy pi_{k-1} (paper A.3; flow-rl old_policy_update_interval)
    negative_bound: float = 0.0  #: linear weights are floored at negative_bound / N instead of 0 (flow-rl b1385e0 dpmd_linear.yaml negative_bound)
    loss_clip: float | None = 3.0  #: each squared error of the actor loss is clipped at this; None = off (flow-rl dpmd.py)
    particle_agg: str = "mean"  #: ensemble reduction of the critics that value the particles (flow-rl dpmd.py)

    def validate(self) -> None:
        """DPMD-specific checks (:func:`fluxrl.config.resolve` calls this)."""
        super().validate()

        def finite(key: str) -> float:
            val = getattr(self, key)
            if not isinstance(val, (int, float)) or not math.isfinite(val):
                raise FluxError(f"algo.{key} must be a finite number, got {val}")
            return val

        if self.num_particles < 2:
            raise FluxError(f"algo.num_particles must be at least 2 (the weights compare "
                            f"particles), got {self.num_particles}")
        if self.refresh_every < 1:
            raise FluxError(f"algo.refresh_every must be at least 1, got {self.refresh_every}")
        if self.reweight not in REWEIGHTS:
            raise FluxError(f"unknown algo.reweight={self.reweight!r}; choose one of: "
                            + ", ".join(REWEIGHTS))
        if self.particle_agg not in AGGREGATIONS:
            raise FluxError(f"unknown algo.particle_agg={self.particle_agg!r}; choose one of: "
                            + ", ".join(AGGREGATIONS))
        if finite("particle_noise") < 0:
            raise FluxError(f"algo.particle_noise must be zero or positive, got {self.particle_noise}")
        if finite("init_temp") <= 0:
            raise FluxError(f"algo.init_temp must be positive, got {self.init_temp}")
        if self.loss_clip is not None and finite("loss_clip") <= 0:
            raise FluxError(f"algo.loss_clip must be positive (or null for no clip), got {self.loss_clip}")
        log_n = math.log(self.num_particles)
        if self.target_kl is not None and not 0 < finite("target_kl") < log_n:
            raise FluxError(f"algo.target_kl must lie in (0, log num_particles = {log_n:.3f}), the "
                            f"range of KL(weights || uniform), got {self.target_kl}")
        if finite("negative_bound") != 0 and self.reweight != "linear":
            raise FluxError(f"algo.negative_bound only applies to reweight=linear, got "
                            f"reweight={self.reweight!r} with negative_bound={self.negative_bound}")
        if self.negative_bound >= 1:
            raise FluxError(f"algo.negative_bound must be below 1 (the floored weights must sum "
                            f"to 1), got {self.negative_bound}")


def dpmd_weights(q: Array, temperature: Array | float, reweight: str = "linear",
                 negative_bound: float = 0.0) -> tuple[Array, Array]:
    """Particle values ``q [..., N]`` -> ``(N * w, KL(w || uniform))``: weights that sum to N per
    state (mean 1, as flow-rl scales them) and the KL per state the temperature is tuned on."""
    n = q.shape[-1]
    w = particle_weights(q, temperature, reweight, negative_bound / n)
    return n * w, kl_from_uniform(w)


def temperature_loss(log_temp: Array, kl: Array, target_kl: float) -> Array:
    """``lambda (target_kl - KL)``: its gradient lowers lambda (sharper weights) while the weights'
    KL is below the target and raises it above (flow-rl dpmd.py temp_loss_fn)."""
    return jnp.exp(log_temp) * (target_kl - jax.lax.stop_gradient(kl))


@struct.dataclass
class DPMDState(GenerativeACState):
    """The generative actor-critic's state plus the mirror-descent reference and the temperature."""

    reference: dict  #: frozen actor parameters: the previous policy pi_{k-1}
    log_temp: Array
    temp_opt: optax.OptState


def make_dpmd(cfg: DPMDConfig, shapes: Shapes) -> OffPolicyAgent:
    """Build DPMD's pure functions for one seed."""
    ac = GenerativeActorCritic.build(cfg, shapes)
    tx_temp = optax.adam(cfg.lr_temp)
    noise = cfg.particle_noise
    q_particles = ac.q(cfg.particle_agg)

    def init(key: Array) -> DPMDState:
        s = ac.init(key)
        log_temp = jnp.log(jnp.asarray(cfg.init_temp, jnp.float32))
        return DPMDState(s.actor, s.critic, s.target, s.actor_opt, s.critic_opt,
                         reference=s.actor, log_temp=log_temp, temp_opt=tx_temp.init(log_temp))

    def act(state: DPMDState, obs: Array, key: Array, deterministic: bool) -> Array:
        # one policy sample either way: flow-rl explores with the diffusion sampler's own noise;
        # evaluation's best of best_of_eval is added by the trainer
        return ac.policy_sample(state.actor, obs, key)

    def update(state: DPMDState, batch: dict, key: Array, update_index: Array):
        k_next, k_part, k_noise, k_loss = jax.random.split(key, 4)
        obs = batch["obs"]
        pc, critic_opt, c_metrics = ac.critic_update(state, batch, k_next)

        # particles of pi_{k-1}, jittered, valued by the pre-update critics in one batched call
        parts = ac.samples(state.reference, obs, k_part, cfg.num_particles)
        parts = parts + noise * normal(k_noise, parts.shape)
        q_parts = q_particles(state.critic, obs[:, None, :], parts)
        temp = jnp.exp(state.log_temp)
        weights, kl = jax.lax.stop_gradient(
            dpmd_weights(q_parts, temp, cfg.reweight, cfg.negative_bound))

        pa, actor_opt, a_loss, _ = ac.actor_fit(state, lambda p: (ac.model.loss(
            ac.actor, p, parts, obs[:, None, :], k_loss, weights, cfg.loss_clip), None))

        log_temp, temp_opt = state.log_temp, state.temp_opt
        if cfg.target_kl is not None:
            g_temp = jax.grad(temperature_loss)(state.log_temp, kl.mean(), cfg.target_kl)
            log_temp, temp_opt = adam_step(state.log_temp, state.temp_opt, g_temp, tx_temp)

        # mirror descent: the new actor becomes the reference every refresh_every updates;
        # update_index is shared by all seeds, so this stays a real branch under vmap
        reference = jax.lax.cond(update_index % cfg.refresh_every == 0, lambda new, old: new,
                                 lambda new, old: old, pa, state.reference)
        new = DPMDState(pa, pc, soft_update(state.target, pc, cfg.tau), actor_opt, critic_opt,
                        reference=reference, log_temp=log_temp, temp_opt=temp_opt)
        metrics = {**c_metrics, "actor_loss": a_loss, "temperature": temp,
                   "weights_kl": kl.mean(), "weights_max": weights.max(-1).mean(),
                   "q_particles": q_parts.mean(), "particle_std": parts.std(-2).mean()}
        return new, metrics

    return OffPolicyAgent(init, act, update, ac.value, ac.sample)


#: this algorithm's entry in the registry (fluxrl.agents.registry)
ALGO = AlgoInfo("dpmd", "weighted_matching", "previous", "off_policy", make_dpmd,
                "Ma et al. 2025, Efficient Online Reinforcement Learning for Diffusion Policy "
                "(DPMD)", DPMDConfig,
                follows="flowrl")
