"""Q-weighted Variational Policy Optimisation (Ding et al. 2024, arXiv 2405.16173, NeurIPS 2024):
the diffusion loss on the policy's own best sample, weighted by its advantage, plus the same loss
on uniform actions (a maximum-entropy pull towards the reference ``Unif(A)``).

Faithful to flow-rl ``agent/online/qvpo.py`` (the paper's reference setup, protocol.md section 3),
in the same update order:

- critic: clipped double Q; the next action is the best of ``target_samples`` samples of the
  *target actor* (an EMA copy of the actor), picked by the target critics' min;
- training samples: ``train_samples`` (64) draws of the actor per state, valued by the online
  critics as they were *before* this step's critic update, reduced by their ensemble mean;
- weights: only the best sample of each state is trained on, weighted by its advantage ``Q_max -
  mean Q`` over the samples (:func:`fluxrl.guidance.weights.top_advantages`, never negative);
- entropy: ``entropy_samples`` (10) uniform actions per state enter the same loss with weight
  ``entropy_coef`` times that state's advantage; the loss is the mean of ``weight * |eps_hat -
  eps|^2`` over all 1 + 10 rows per state and the action dimensions;
- then the target actor and the target critics move by EMA (``tau``);
- acting: the best of ``best_of_act`` actor samples by the online critics' min (the trainer's
  best-of-N switch), at evaluation the best of 32 (``best_of_eval``).

Deliberate differences:

- the uniform actions of the entropy term cover the action box [-1, 1] as in the paper and the
  authors' code (``uniform_(-1, 1)``); flow-rl draws them from ``jax.random.uniform``'s default
  [0, 1), which covers only the positive corner of the box;
- "behaviour samples" (paper A.3: 2, HalfCheetah 4, Hopper 1; the user sets ``best_of_act``) pick
  the acting action, as in the paper and the authors' code, and by default also the TD target's
  next action (the authors' ``target_sample`` defaults to the behaviour count). flow-rl uses its
  ``num_behavior_samples`` for the TD target only and acts with one sample: ``algo.best_of_act=1
  algo.target_samples=2`` reproduces it;
- every generative model of :data:`fluxrl.generative.MODELS` works (the weighted loss is the
  model's own regression loss); flow-rl only has the cosine VP diffusion (``vp-cosine``, the
  default). The entropy coefficient is constant (flow-rl; the authors' code decays 0.02 to 0.002).

flow-rl has no DMC config for QVPO; there the denoiser keeps its 2 layers at the suite width (512).
The behaviour samples of HalfCheetah (4) and Hopper (1) are rows of :mod:`fluxrl.task_defaults`.
The sampler injects ``sqrt(beta_i)`` noise per step (``ddpm_variance="beta"``, flow-rl
``ContinuousDDPM``; the authors' ``Diffusion.p_sample`` uses the posterior variance).

Departures of flow-rl from the authors' code (wadx2019/qvpo at 40a1974, ``agent/qvpo.py``,
``main.py``), and which side this file takes:

- acting and TD target: the authors act with the best of ``behavior_sample`` and take the TD
  target's next action from ``target_sample`` samples; flow-rl acts with one sample and uses its
  behaviour count for the TD target only (here: the authors');
- entropy coefficient: the authors decay it 0.02 -> 0.002; flow-rl keeps 0.01 (here: flow-rl's);
- uniform actions: the authors draw them on [-1, 1]; flow-rl on [0, 1) (here: the authors');
- training-sample values: the authors the critics' min; flow-rl their mean (here: flow-rl's);
- denoiser lr: the authors 1e-4; flow-rl 3e-4 (here: flow-rl's);
- chain: the authors the posterior variance, also at evaluation; flow-rl ``sqrt(beta)`` (here:
  flow-rl's).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import jax
import jax.numpy as jnp
from flax import struct

from fluxrl.agents.base import AlgoInfo, OffPolicyAgent, Shapes
from fluxrl.agents.common import GenerativeACState, GenerativeActorCritic, soft_update
from fluxrl.agents.config import GenerativeConfig, NetConfig
from fluxrl.errors import FluxError
from fluxrl.guidance.weights import top_advantages
from fluxrl.nets.critics import AGGREGATIONS
from fluxrl.rng import uniform

Array = jax.Array


def qvpo_actor() -> NetConfig:
    """QVPO's denoiser: 2 hidden Mish layers (the fused input layer and one more), width per suite."""
    return NetConfig(depth=2, act="mish")


@dataclass
class QVPOConfig(GenerativeConfig):
    """QVPO (Ding et al. 2024): advantage-weighted diffusion loss on the best of many policy samples,
    plus an entropy term on uniform actions."""

    name: str = "qvpo"  #: algorithm name in the registry
    actor: NetConfig = field(default_factory=qvpo_actor)  #: denoiser MLP, 2 x 256 Mish on Gym (paper A.3: QVPO actors 2 x 256; flow-rl qvpo.yaml diffusion.hidden_dims [256, 256])
    lr_actor: float = 3e-4  #: denoiser Adam lr, constant (paper A.3; flow-rl qvpo.yaml diffusion.lr; the authors' code 1e-4)
    lr_critic: float = 3e-4  #: critic Adam lr (paper A.3; flow-rl qvpo.yaml critic_lr)
    model: str = "vp-cosine"  #: generative model, any of fluxrl.generative.MODELS (flow-rl qvpo.py ContinuousDDPM, cosine)
    best_of_eval: int = 32  #: evaluation takes the best of this many samples by the online critics' min (flow-rl qvpo.yaml num_evaluate_samples; authors' eval_sample)
    best_of_act: int = 2  #: behaviour samples: acting takes the best of this many by the online critics' min; set 4 on HalfCheetah, 1 on Hopper (paper A.3; authors' behavior_sample)
    target_samples: int | None = None  #: the TD target's next action is the best of this many target-actor samples by the target critics' min; unset = best_of_act (flow-rl num_behavior_samples; authors' target_sample)
    train_samples: int = 64  #: actor samples per state whose best is trained on (paper A.3; flow-rl qvpo.yaml num_train_samples)
    train_agg: str = "mean"  #: ensemble reduction of the critics that value the training samples (flow-rl qvpo.py; the authors' code: min)
    entropy_coef: float = 0.01  #: weight of the uniform-action term, relative to the state's advantage; 0 turns it off (paper A.3; flow-rl qvpo.yaml entropy_coef)
    entropy_samples: int = 10  #: uniform actions per state in the entropy term (flow-rl qvpo.py and the authors' code: 10)

    def validate(self) -> None:
        """QVPO-specific checks (:func:`fluxrl.config.resolve` calls this)."""
        super().validate()
        if self.train_samples < 2:
            raise FluxError(f"algo.train_samples must be at least 2 (the advantage compares the "
                            f"best sample with the samples' mean), got {self.train_samples}")
        if self.target_samples is not None and self.target_samples < 1:
            raise FluxError(f"algo.target_samples must be at least 1 (or null for best_of_act), "
                            f"got {self.target_samples}")
        if self.train_agg not in AGGREGATIONS:
            raise FluxError(f"unknown algo.train_agg={self.train_agg!r}; choose one of: "
                            + ", ".join(AGGREGATIONS))
        if not (math.isfinite(self.entropy_coef) and self.entropy_coef >= 0):
            raise FluxError(f"algo.entropy_coef must be zero or positive, got {self.entropy_coef}")
        if self.entropy_samples < 0 or (self.entropy_coef > 0 and self.entropy_samples == 0):
            raise FluxError(f"algo.entropy_samples must be at least 1 while entropy_coef > 0 (set "
                            f"entropy_coef=0 to turn the term off), got {self.entropy_samples}")


def qvpo_targets(samples: Array, q: Array, uniform_actions: Array | None,
                 entropy_coef: float) -> tuple[Array, Array, Array]:
    """What QVPO's actor regresses on: ``samples [B, N, A]`` valued ``q [B, N]`` and ``uniform_actions
    [B, M, A]`` (or None) -> ``(x0 [B, 1 + M, A], weights [B, 1 + M], advantage [B])``. Row 0 of a
    state is its best sample with weight ``adv = max q - mean q``; rows 1..M its uniform actions with
    weight ``entropy_coef * adv``. The weights carry no gradient."""
    idx, adv = top_advantages(jax.lax.stop_gradient(q), 1)
    best = jnp.take_along_axis(samples, idx[..., None], axis=-2)
    if uniform_actions is None:
        return best, adv, adv[..., 0]
    m = uniform_actions.shape[-2]
    x0 = jnp.concatenate([best, uniform_actions], axis=-2)
    weights = jnp.concatenate([adv, jnp.broadcast_to(entropy_coef * adv, adv.shape[:-1] + (m,))], -1)
    return x0, weights, adv[..., 0]


@struct.dataclass
class QVPOState(GenerativeACState):
    """The generative actor-critic's state plus the target actor."""

    actor_target: dict  #: EMA copy of the actor that draws the TD target's next action


def make_qvpo(cfg: QVPOConfig, shapes: Shapes) -> OffPolicyAgent:
    """Build QVPO's pure functions for one seed."""
    ac = GenerativeActorCritic.build(cfg, shapes)
    n_target = cfg.target_samples if cfg.target_samples is not None else cfg.best_of_act
    m_unif = cfg.entropy_samples if cfg.entropy_coef > 0 else 0
    q_next, q_train = ac.q(cfg.critic_agg), ac.q(cfg.train_agg)

    def init(key: Array) -> QVPOState:
        s = ac.init(key)
        return QVPOState(s.actor, s.critic, s.target, s.actor_opt, s.critic_opt,
                         actor_target=s.actor)

    def act(state: QVPOState, obs: Array, key: Array, deterministic: bool) -> Array:
        # one policy sample either way; the trainer's best-of-N picks among best_of_act of them
        # while training and best_of_eval at evaluation
        return ac.policy_sample(state.actor, obs, key)

    def update(state: QVPOState, batch: dict, key: Array, update_index: Array):
        k_next, k_train, k_unif, k_loss = jax.random.split(key, 4)
        obs, next_obs = batch["obs"], batch["next_obs"]

        # critic: the best of n_target target-actor samples at s'; the target critics' reduced value
        # of the picked action is the largest reduced value among the candidates
        next_a = ac.samples(state.actor_target, next_obs, k_next, n_target)
        next_q = q_next(state.target, next_obs[:, None, :], next_a).max(-1)
        pc, critic_opt, c_metrics = ac.critic_fit(state, batch, next_q)

        # actor: many samples per state, valued by the pre-update critics in one batched call
        samples = ac.samples(state.actor, obs, k_train, cfg.train_samples)
        q_samples = q_train(state.critic, obs[:, None, :], samples)
        unif = None
        if m_unif:
            unif = 2.0 * uniform(k_unif, (obs.shape[0], m_unif, shapes.act_dim)) - 1.0
        x0, weights, adv = qvpo_targets(samples, q_samples, unif, cfg.entropy_coef)
        pa, actor_opt, a_loss, _ = ac.actor_fit(state, lambda p: (ac.model.loss(
            ac.actor, p, x0, obs[:, None, :], k_loss, weights), None))

        new = QVPOState(pa, pc, soft_update(state.target, pc, cfg.tau), actor_opt, critic_opt,
                        actor_target=soft_update(state.actor_target, pa, cfg.tau))
        metrics = {**c_metrics, "actor_loss": a_loss, "q_samples": q_samples.mean(),
                   "advantage": adv.mean(), "advantage_max": adv.max(),
                   "sample_std": samples.std(-2).mean()}
        return new, metrics

    return OffPolicyAgent(init, act, update, ac.value, ac.sample)


#: this algorithm's entry in the registry (fluxrl.agents.registry)
ALGO = AlgoInfo("qvpo", "weighted_matching", "uniform", "off_policy", make_qvpo,
                "Ding et al. 2024, Diffusion-based Reinforcement Learning via Q-weighted "
                "Variational Policy Optimization (QVPO)", QVPOConfig,
                follows="flowrl")
