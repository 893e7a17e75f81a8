"""GenPO (Ding et al. 2025, GenPO: Generative Diffusion Models Meet On-Policy Reinforcement
Learning): PPO for a flow policy made exactly invertible, so its likelihood is exact.

Follows the authors' code (wadx2019/genpo at 5b6711b: ``flow_rsl_rl/rsl_rl/modules/reflow/flow.py``
``Flow``, ``modules/actor_critic_flow.py``, ``algorithms/flowppo.py``, ``runners/
on_policy_flow_runner.py``, and the Ant config ``source/isaaclab_tasks/.../classic/ant/agents/
rsl_rl_ppo_cfg.py``):

- the policy draws ``x0 = [z, y] ~ N(0, I_2d)`` and maps it by ``N`` coupled steps, ``t = i / N``,
  ``dt = 1 / N``, one velocity network ``v`` for both halves: ``z += dt v(y)``, ``y += dt v(z)``,
  ``z = p z + (1 - p) y``, ``y = p y + (1 - p) z`` (the new ``z``); the env action is
  ``(z + y) / 2``; evaluation samples too (``act_inference`` draws fresh noise);
- each shear has determinant 1 and each mix ``p^2`` per pair, so ``log|det dx/dx0| = 2 N d log
  p`` and ``log pi(x) = log N(x0) - 2 N d log p`` with ``x0`` the inverse of ``x`` (exact,
  closed form: ``Flow._Heun_method_inverse``);
- the loss is PPO's clipped surrogate on ``exp(log pi_new(x) - log pi_old(x))``, rsl_rl's clipped
  value loss, ``- entropy_coef * entropy`` with entropy ``-mean log pi_new(x)`` of the rollout's
  ``x``, and ``compress_coef * mean ||z - y||_2`` on fresh samples of the current policy;
- the learning rate adapts on ``kl = mean(log pi_old - log pi_new)`` of each minibatch's samples
  (rsl_rl PPO: the closed-form KL of its Gaussians), before that minibatch's step: ``lr / 1.5`` (floor 1e-5) above ``2 kl_target``, ``lr * 1.5`` (cap 1e-2) below
  ``kl_target / 2`` when ``kl > -1e-4`` (rsl_rl PPO asks ``kl > 0``); the rate lives in the
  optimiser state (``optax.inject_hyperparams``), so a resumed run continues it exactly.

Defaults: paper Table 4 (5 steps, time embedding 32, ELU 3 x 256, clip 0.2, entropy 0.002,
compression 0.01, actor lr 1e-4, critic lr 1e-3), p 0.95 and target KL 0.01 from the Ant config.
Differences from the authors' code:

- the log-determinant is the constant above; GenPO computes it with ``torch.func.jacrev`` and
  ``det`` per sample when acting and, differentiated through, in every update
  (``log_det="jacobian"`` does that here, for checks and benchmarks/genpo_logdet.py);
- the velocity network is fluxrl's denoiser (learned Fourier time features, Dense(2 T) - act -
  Dense(T), fused input layer), where GenPO concatenates ``[x, obs, time_mlp(t)]`` with fixed
  sinusoidal features and a 2 x 256 time MLP; flax initialisation;
- policy and value have their own Adam, each rate adapted by the rule (GenPO: one Adam over both,
  one rate, 5e-4 in the Ant config; the same when the rates are equal);
- entropy 0.002 (Table 4; the Ant config has 0.0); GenPO's importance-sampled
  ``ActorCriticFlow.entropy`` is never called, and ``use_compress`` / ``use_entropy`` are ignored
  by ``FlowPPO.update``, so the compression term always enters (as here);
- sizes are Table 4's (the Ant config: actor and critic 400-200-100 Mish, lr 5e-4, 5 epochs x 4
  minibatches, 32 steps per env);
- advantages are standardised per minibatch (rsl_rl: over the rollout), GAE is the trainer's, a
  time-out bootstraps from ``V`` of its last observation (rsl_rl: ``gamma V(s_t)`` added to the
  reward), and the executed action is clipped to [-1, 1] (the reference clips only if
  ``clip_actions`` is set); the likelihood is of the unclipped ``[z, y]`` in both.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import optax

from fluxrl.agents.base import AlgoInfo, OnPolicyAgent, Rollout, Shapes
from fluxrl.agents.common import PGState, ValueHead, clipped_surrogate, standardise
from fluxrl.agents.config import PolicyGradientConfig
from fluxrl.errors import FluxError
from fluxrl.generative.base import Network, as_network
from fluxrl.nets.backbones import backbone_from
from fluxrl.nets.denoiser import make_denoiser
from fluxrl.rng import normal

LR_FACTOR = 1.5  #: the adaptive rate is divided / multiplied by this (flowppo.py update)
LR_MIN, LR_MAX = 1e-5, 1e-2  #: bounds of the adaptive rate (flowppo.py update)
KL_FLOOR = -1e-4  #: the rate grows only while kl > this (flowppo.py; rsl_rl ppo.py: 0.0)


@dataclass
class GenPOConfig(PolicyGradientConfig):
    """GenPO: PPO with the exact likelihood of an invertible coupled flow (paper Table 4)."""

    name: str = "genpo"  #: algorithm name in the registry
    flow_steps: int = 5  #: coupled flow steps N (paper Table 4; genpo Ant cfg flow_num_steps)
    mix: float = 0.95  #: mixing p of z and y after each step (genpo Ant cfg mix_para; ActorCriticFlow default)
    time_dim: int = 32  #: time-embedding size (paper Table 4; ActorCriticFlow time_dim)
    fourier_scale: float = 1.0  #: init std of the denoiser's learned Fourier frequencies (fluxrl.nets.denoiser default)
    entropy_coef: float = 0.002  #: weight of the entropy -mean log pi (paper Table 4; genpo Ant cfg: 0.0)
    compress_coef: float = 0.01  #: weight of the mean L2 norm of z - y on fresh samples (paper Table 4; genpo Ant cfg compress_coef)
    value_coef: float = 2.0  #: weight of 0.5 mean(squared error, clipped as rsl_rl): 2.0 is rsl_rl value_loss_coef 1.0 on the plain mean (genpo Ant cfg)
    clip_value: bool = True  #: rsl_rl's clipped value loss, clip range = clip (genpo Ant cfg use_clipped_value_loss)
    schedule: str = "adaptive"  #: adaptive (the KL rule on both rates) or fixed (genpo Ant cfg schedule: adaptive)
    kl_target: float = 0.01  #: target KL of the adaptive rate (genpo Ant cfg desired_kl; protocol.md section 7)
    log_det: str = "analytic"  #: analytic (the constant 2 N d log p) or jacobian (jacrev + slogdet per sample, as GenPO computes it)

    def validate(self) -> None:
        """Shared checks plus the flow's sizes, a mix in (0, 1], the coefficients and choices."""
        super().validate()
        if self.flow_steps < 1:
            raise FluxError(f"algo.flow_steps must be at least 1, got {self.flow_steps}")
        if self.time_dim < 2 or self.time_dim % 2:
            raise FluxError(f"algo.time_dim must be a positive even number, got {self.time_dim}")
        if not 0.0 < self.mix <= 1.0:
            raise FluxError(f"algo.mix must lie in (0, 1] (invertible mixing), got {self.mix}")
        for key in ("entropy_coef", "compress_coef"):
            if not (math.isfinite(getattr(self, key)) and getattr(self, key) >= 0):
                raise FluxError(f"algo.{key} must be zero or positive, got {getattr(self, key)}")
        for key in ("fourier_scale", "kl_target"):
            if not (math.isfinite(getattr(self, key)) and getattr(self, key) > 0):
                raise FluxError(f"algo.{key} must be positive, got {getattr(self, key)}")
        for key, allowed in (("schedule", ("adaptive", "fixed")),
                             ("log_det", ("analytic", "jacobian"))):
            if getattr(self, key) not in allowed:
                raise FluxError(f"unknown algo.{key}={getattr(self, key)!r}; choose "
                                + " or ".join(allowed))


@dataclass(frozen=True)
class CoupledFlow:
    """GenPO's invertible flow on ``[z, y]`` (``[..., 2 d]``, ``d = act_dim``) given observations
    ``[..., obs]``."""

    net: Network
    act_dim: int
    steps: int
    mix: float

    def _embed(self, params: Any, obs: jax.Array) -> tuple[jax.Array, jax.Array]:
        t = jnp.arange(self.steps, dtype=jnp.float32) / self.steps
        return self.net.embed_cond(params, obs), self.net.embed_time(params, t)

    def forward(self, params: Any, obs: jax.Array, x0: jax.Array) -> jax.Array:
        """Noise ``x0`` to the flow's sample (``Flow._Heun_method``)."""
        (c, e), p, dt = self._embed(params, obs), self.mix, 1.0 / self.steps
        z, y = jnp.split(x0, 2, axis=-1)
        for i in range(self.steps):
            z = z + dt * self.net.head(params, y, c, e[i])
            y = y + dt * self.net.head(params, z, c, e[i])
            z = p * z + (1 - p) * y
            y = p * y + (1 - p) * z
        return jnp.concatenate([z, y], axis=-1)

    def inverse(self, params: Any, obs: jax.Array, x: jax.Array) -> jax.Array:
        """A sample back to its noise (``Flow._Heun_method_inverse``)."""
        (c, e), p, dt = self._embed(params, obs), self.mix, 1.0 / self.steps
        z, y = jnp.split(x, 2, axis=-1)
        for i in reversed(range(self.steps)):
            y = (y - (1 - p) * z) / p
            z = (z - (1 - p) * y) / p
            y = y - dt * self.net.head(params, z, c, e[i])
            z = z - dt * self.net.head(params, y, c, e[i])
        return jnp.concatenate([z, y], axis=-1)

    def log_det(self) -> float:
        """``log|det d forward / d x0| = 2 N d log p``: shears have determinant 1, a mix ``p^2``
        per (z_j, y_j) pair."""
        return 2.0 * self.steps * self.act_dim * math.log(self.mix)

    def jacobian_log_det(self, params: Any, obs: jax.Array, x: jax.Array,
                         inverse: bool = False) -> jax.Array:
        """``[n]`` log|det| of the forward (or inverse) map at each row of ``x`` by ``jax.jacrev``
        and ``slogdet``, as GenPO computes it (``torch.func.jacrev`` and ``det``)."""
        f = self.inverse if inverse else self.forward
        jac = jax.vmap(jax.jacrev(lambda xi, oi: f(params, oi, xi)))(x, obs)
        return jnp.linalg.slogdet(jac)[1]


def gaussian_log_prob(x0: jax.Array) -> jax.Array:
    """``log N(x0; 0, I)`` summed over the last axis."""
    return (-0.5 * x0**2 - 0.5 * math.log(2 * math.pi)).sum(-1)


def adapt_lr(lr: jax.Array, kl: jax.Array, kl_target: float) -> jax.Array:
    """GenPO's (rsl_rl's) adaptive rate: ``/ 1.5`` above ``2 kl_target``, ``* 1.5`` below
    ``kl_target / 2`` (when ``kl > -1e-4``), kept in [1e-5, 1e-2]."""
    down = jnp.maximum(LR_MIN, lr / LR_FACTOR)
    up = jnp.minimum(LR_MAX, lr * LR_FACTOR)
    return jnp.where(kl > 2 * kl_target, down,
                     jnp.where((kl < kl_target / 2) & (kl > KL_FLOOR), up, lr))


def _set_lr(opt_state: Any, lr: jax.Array) -> Any:
    return opt_state._replace(hyperparams={**opt_state.hyperparams, "learning_rate": lr})


def coupled_flow(cfg: GenPOConfig, act_dim: int) -> tuple[Any, CoupledFlow]:
    """The velocity network (a denoiser module, for ``init``) and the flow built on it."""
    net = cfg.actor
    denoiser = make_denoiser(act_dim, net.backbone, net.width, net.depth, net.act, net.layer_norm,
                             cfg.time_dim, fourier_scale=cfg.fourier_scale)
    return denoiser, CoupledFlow(as_network(denoiser), act_dim, cfg.flow_steps, cfg.mix)


def compression_loss(flow: CoupledFlow, params: Any, obs: jax.Array, key: jax.Array) -> jax.Array:
    """``mean_b ||z - y||_2`` of one fresh sample per state drawn with noise ``normal(key)``
    (flowppo.py ``compress_loss`` on ``policy.actor.inference``; gradient 0 where z = y, as
    ``torch.norm``)."""
    x = flow.forward(params, obs, normal(key, obs.shape[:-1] + (2 * flow.act_dim,)))
    z, y = jnp.split(x, 2, axis=-1)
    return optax.safe_norm(z - y, 0.0, axis=-1).mean()


def make_genpo(cfg: GenPOConfig, shapes: Shapes) -> OnPolicyAgent:
    """Build GenPO for one seed."""
    cfg.validate()
    d = shapes.act_dim
    denoiser, flow = coupled_flow(cfg, d)
    critic = ValueHead(backbone_from(cfg.critic))
    tx_actor, tx_critic = (optax.inject_hyperparams(optax.adam)(learning_rate=lr)
                           for lr in (cfg.lr_actor, cfg.lr_critic))
    jacobian = cfg.log_det == "jacobian"

    def init(key: jax.Array) -> PGState:
        ka, kc = jax.random.split(key)
        obs = jnp.zeros((1, shapes.obs_dim))
        pa = denoiser.init(ka, jnp.zeros((1, d)), jnp.zeros((1,)), obs)["params"]
        pc = critic.init(kc, obs)["params"]
        return PGState(pa, pc, tx_actor.init(pa), tx_critic.init(pc))

    def act(state: PGState, obs: jax.Array, key: jax.Array, deterministic: bool):
        x0 = normal(key, (obs.shape[0], 2 * d))
        x = flow.forward(state.actor, obs, x0)
        action = jnp.clip(0.5 * (x[:, :d] + x[:, d:]), -1.0, 1.0)
        if deterministic:  # GenPO evaluates by sampling too (act_inference)
            return action, {}
        log_det = flow.jacobian_log_det(state.actor, obs, x0) if jacobian else flow.log_det()
        return action, {"flow_action": x, "log_prob": gaussian_log_prob(x0) - log_det}

    def value(state: PGState, obs: jax.Array) -> jax.Array:
        return critic.apply({"params": state.critic}, obs)

    def log_prob(params: Any, obs: jax.Array, x: jax.Array) -> jax.Array:
        inv = flow.jacobian_log_det(params, obs, x, inverse=True) if jacobian else -flow.log_det()
        return gaussian_log_prob(flow.inverse(params, obs, x)) + inv

    def loss_fn(params: tuple, batch: Rollout, key: jax.Array):
        pa, pc = params
        new_log_prob = log_prob(pa, batch.obs, batch.extras["flow_action"])
        log_ratio = new_log_prob - batch.extras["log_prob"]
        ratio = jnp.exp(log_ratio)
        adv = standardise(batch.advantage) if cfg.normalize_advantage else batch.advantage
        policy_loss, clipped = clipped_surrogate(ratio, adv, cfg.clip)
        v = critic.apply({"params": pc}, batch.obs)
        err = (v - batch.target) ** 2
        if cfg.clip_value:  # rsl_rl: old value + clamp(V - old value, -clip, clip)
            old = batch.target - batch.advantage
            err = jnp.maximum(err, (old + jnp.clip(v - old, -cfg.clip, cfg.clip) - batch.target) ** 2)
        v_loss = cfg.value_coef * 0.5 * err.mean()
        entropy = -new_log_prob.mean()  # of the 2d-dim [z, y], one sample per state (FlowPPO)
        compress = compression_loss(flow, pa, batch.obs, key)
        total = policy_loss + v_loss - cfg.entropy_coef * entropy + cfg.compress_coef * compress
        return total, {"policy_loss": policy_loss, "value_loss": v_loss, "entropy": entropy,
                       "compress_loss": compress, "clip_fraction": clipped,
                       "ratio_mean": ratio.mean(), "kl": jax.lax.stop_gradient(-log_ratio.mean())}

    def update(state: PGState, batch: Rollout, key: jax.Array, update_index: jax.Array):
        del update_index  # the rate adapts on the KL, not on a schedule
        (loss, m), (ga, gc) = jax.value_and_grad(loss_fn, has_aux=True)(
            (state.actor, state.critic), batch, key)
        norm = optax.tree.norm((ga, gc))
        if cfg.max_grad_norm > 0:
            scale = jnp.minimum(1.0, cfg.max_grad_norm / (norm + 1e-6))
            ga, gc = jax.tree.map(lambda g: g * scale, (ga, gc))
        actor_opt, critic_opt = state.actor_opt, state.critic_opt
        if cfg.schedule == "adaptive":  # before this minibatch's step, as FlowPPO.update
            actor_opt, critic_opt = (_set_lr(o, adapt_lr(o.hyperparams["learning_rate"], m["kl"],
                                                          cfg.kl_target))
                                     for o in (actor_opt, critic_opt))
        ua, actor_opt = tx_actor.update(ga, actor_opt, state.actor)
        uc, critic_opt = tx_critic.update(gc, critic_opt, state.critic)
        new = PGState(optax.apply_updates(state.actor, ua), optax.apply_updates(state.critic, uc),
                      actor_opt, critic_opt)
        return new, {**m, "loss": loss, "grad_norm": norm,
                     "lr_actor": actor_opt.hyperparams["learning_rate"],
                     "lr_critic": critic_opt.hyperparams["learning_rate"]}

    return OnPolicyAgent(init=init, act=act, value=value, update=update)


ALGO = AlgoInfo(
    name="genpo", family="policy_gradient", reference="previous", setting="on_policy",
    make=make_genpo, config=GenPOConfig, follows="authors",
    paper="Ding et al. 2025, GenPO: Generative Diffusion Models Meet On-Policy Reinforcement Learning",
)
