"""Configuration bases of the algorithms: networks, the off-policy actor-critic fields, the
generative actor's fields. Each algorithm's config (in its agent file) subclasses one of these and
redeclares a field where its default or its source differs; the run-level config
(:mod:`fluxrl.config`) holds one of them under ``algo``.

Every field carries a one-line doc with the source of its default. ``None`` net sizes are filled
per suite by :func:`fluxrl.config.resolve` (paper Table 3 and Appendix A.3).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

from fluxrl.errors import FluxError, close_matches


@dataclass
class NetConfig:
    """A backbone: ``None`` fields take the suite default (protocol.md section 3)."""

    backbone: str = "mlp"  #: mlp | simba | bronet (nets/backbones.py)
    width: int | None = None  #: hidden width; Gym 256, DMC 512 (paper A.3)
    depth: int | None = None  #: hidden layers (mlp) or residual blocks; Gym 2, DMC 3 (paper A.3)
    act: str | None = None  #: activation; Gym relu, DMC elu (paper A.3; flow-rl dmc/algo/sac.yaml)
    layer_norm: bool = False  #: LayerNorm after each hidden layer of an MLP (flow-rl sac.yaml: false)

    def validate(self, where: str) -> None:
        """A known backbone and activation, positive sizes (``where`` names it in errors, e.g.
        ``algo.actor``); call after the suite defaults are filled."""
        from fluxrl.nets.backbones import BACKBONES, activation

        if self.backbone not in BACKBONES:
            raise FluxError(f"unknown backbone {where}.backbone={self.backbone!r}; "
                            f"{close_matches(self.backbone, BACKBONES)}")
        if self.act is not None:
            activation(self.act)
        for key in ("width", "depth"):  # None: not filled yet (the suite default comes later)
            if getattr(self, key) is not None and getattr(self, key) <= 0:
                raise FluxError(f"{where}.{key} must be positive, got {getattr(self, key)}")


#: Rules for fields that several algorithms share by name (SAC, DACER and DIME's ``init_alpha``,
#: TD3, DACER and DIME's ``policy_delay``, ...): ``name -> (check, what the check asks)``.
FIELD_RULES: dict[str, tuple[Any, str]] = {
    "init_alpha": (lambda v: v > 0, "positive"),
    "policy_delay": (lambda v: v >= 1, "at least 1"),
    "target_noise": (lambda v: v >= 0, "zero or positive"),
    "noise_clip": (lambda v: v >= 0, "zero or positive"),
    "explore_noise": (lambda v: v >= 0, "zero or positive"),
}


@dataclass
class AlgoConfig:
    """Fields every off-policy actor-critic shares (the base of every registered algorithm's
    config today; the on-policy and offline settings bring their own bases); each algorithm's config (in its agent file)
    subclasses this and redeclares a field where its default or source differs."""

    name: str = ""  #: algorithm name in the registry
    actor: NetConfig = field(default_factory=NetConfig)  #: actor backbone (paper A.3: 2 x 256 on Gym, 3 x 512 on DMC)
    critic: NetConfig = field(default_factory=NetConfig)  #: critic backbone (paper A.3)
    num_critics: int = 2  #: Q ensemble size (paper A.3)
    critic_agg: str = "min"  #: ensemble reduction for TD targets, the actor and best-of-N picking: min | mean (clipped double Q)
    discount: float = 0.99  #: gamma (paper Table 3)
    tau: float = 0.005  #: target EMA rate (paper A.3)
    lr_actor: float = 3e-4  #: actor Adam lr (paper A.3)
    lr_critic: float = 3e-4  #: critic Adam lr (paper A.3)
    best_of_eval: int = 1  #: best-of-N at evaluation: sample N actions per state, take the one the online critics value most (1 = off, the policy's own evaluation action)
    best_of_act: int = 1  #: best-of-N for training-time acting, over exploratory samples (1 = off)

    def validate(self) -> None:
        """Checks shared by every algorithm (subclasses extend this): the networks, the
        ensemble, the rates, and every field :data:`FIELD_RULES` names that the config has."""
        from fluxrl.nets.critics import AGGREGATIONS

        for part in ("actor", "critic"):
            getattr(self, part).validate(f"algo.{part}")
        for key in ("best_of_eval", "best_of_act"):
            if getattr(self, key) < 1:
                raise FluxError(f"algo.{key} must be at least 1 (1 turns best-of-N off), got "
                                f"{getattr(self, key)}")
        if self.num_critics < 1:
            raise FluxError(f"algo.num_critics must be at least 1, got {self.num_critics}")
        if self.critic_agg not in AGGREGATIONS:
            raise FluxError(f"unknown algo.critic_agg={self.critic_agg!r}; choose one of: "
                            + ", ".join(AGGREGATIONS))
        for key in ("discount", "tau"):
            if not 0.0 <= getattr(self, key) <= 1.0:
                raise FluxError(f"algo.{key} must lie in [0, 1], got {getattr(self, key)}")
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name.startswith("lr_") and not (math.isfinite(value) and value > 0):
                raise FluxError(f"algo.{f.name} must be a positive finite number, got {value}")
            if f.name in FIELD_RULES:
                ok, bound = FIELD_RULES[f.name]
                if not (math.isfinite(value) and ok(value)):
                    raise FluxError(f"algo.{f.name} must be {bound}, got {value}")


def diffusion_actor() -> NetConfig:
    """The diffusion actor's network: 3 hidden Mish layers, width per suite (paper A.3: 3 x 256,
    DMC 512, Mish)."""
    return NetConfig(depth=3, act="mish")


@dataclass
class GenerativeConfig(AlgoConfig):
    """Fields every diffusion / flow actor shares (its generative model and denoiser)."""

    actor: NetConfig = field(default_factory=diffusion_actor)  #: denoiser MLP, depth counting its fused input layer (paper A.3: 3x256 Mish, DMC 512)
    model: str = "vp-cosine"  #: generative model (fluxrl.generative.MODELS; flow-rl ContinuousDDPM, cosine schedule)
    diffusion_steps: int = 20  #: denoising steps when sampling (paper A.3; flow-rl diffusion.steps)
    ddpm_variance: str = "beta"  #: noise each ancestral step of a VP model (vp-*, ddpm*) adds: beta (sqrt(beta_i), flow-rl ContinuousDDPM solver ddpm) or posterior (beta-tilde, Ho et al. 2020's other choice, DDIM eta 1); flow and edm have no such step and ignore it (fluxrl.generative.diffusion)
    time_dim: int = 64  #: Fourier time-embedding size (paper A.3; flow-rl diffusion.time_dim)
    fourier_scale: float = 0.2  #: init std of the learned Fourier frequencies (flow-rl LearnableFourierEmbedding)
    obs_encoder_width: int = 128  #: width of the Mish MLP that encodes the state for the denoiser (flow-rl cond_embedding MLP(128, 128))
    obs_encoder_depth: int = 2  #: layers of that state encoder, 0 for none (flow-rl cond_embedding)

    def validate(self) -> None:
        """Shared checks plus the generative model's: a known model, positive sizes."""
        super().validate()
        if not (math.isfinite(self.fourier_scale) and self.fourier_scale > 0):
            raise FluxError(f"algo.fourier_scale must be a positive number, got {self.fourier_scale}")
        for key in ("diffusion_steps", "time_dim", "obs_encoder_width"):
            if getattr(self, key) < 1:
                raise FluxError(f"algo.{key} must be at least 1, got {getattr(self, key)}")
        if self.time_dim % 2:
            raise FluxError(f"algo.time_dim must be even (cos and sin halves), got {self.time_dim}")
        if self.obs_encoder_depth < 0:
            raise FluxError(f"algo.obs_encoder_depth must be zero or positive, got "
                            f"{self.obs_encoder_depth}")
        config_model(self)  # FluxError if the model is unknown or an option is bad


def config_model(cfg: GenerativeConfig) -> Any:
    """The generative model a config describes: ``cfg.model`` with ``cfg.diffusion_steps`` and,
    for the VP models, ``cfg.ddpm_variance`` (a :class:`FluxError` for a bad name or value)."""
    from fluxrl.generative import MODELS, make_model, model_class

    options: dict[str, Any] = {"steps": cfg.diffusion_steps}
    if cfg.model in MODELS and any(f.name == "ddpm_variance"
                                   for f in dataclasses.fields(model_class(cfg.model))):
        options["ddpm_variance"] = cfg.ddpm_variance
    return make_model(cfg.model, **options)


@dataclass
class CandidateConfig(GenerativeConfig):
    """Generative agents whose critic values hundreds of candidate actions per state (SDAC, iDEM)."""

    critic_block: int = 512  #: speed only: the critic values the candidates in lax.map blocks of about this many actions (cache-sized blocks ran 2.5-4x faster than one call on all 128K rows on a 2-core CPU; fluxrl.nets.blocked); 0 = one call

    def validate(self) -> None:
        """Generative checks plus a non-negative block size."""
        super().validate()
        if self.critic_block < 0:
            raise FluxError(f"algo.critic_block must be zero (one call) or positive, got "
                            f"{self.critic_block}")


def policy_gradient_net() -> NetConfig:
    """Actor and critic of the on-policy agents: 3 x 256 ELU (paper Table 4, PPO)."""
    return NetConfig(width=256, depth=3, act="elu")


@dataclass
class PolicyGradientConfig:
    """Fields every on-policy agent shares (paper Table 4 unless a field says otherwise). The
    rollout, GAE and the epochs x minibatches loop are the trainer's (``on_policy.*``)."""

    name: str = ""  #: algorithm name in the registry
    actor: NetConfig = field(default_factory=policy_gradient_net)  #: policy backbone (paper Table 4: 3 x 256 ELU)
    critic: NetConfig = field(default_factory=policy_gradient_net)  #: value backbone (paper Table 4: 3 x 256 ELU)
    lr_actor: float = 1e-4  #: policy Adam lr (paper Table 4)
    lr_critic: float = 1e-3  #: value Adam lr (paper Table 4)
    max_grad_norm: float = 1.0  #: clip of the global norm of the joint policy and value gradient, 0 = none (paper Table 4: 1.0; Brax: none)
    clip: float = 0.2  #: PPO ratio clip epsilon (paper Table 4)
    value_coef: float = 0.5  #: weight of the value loss 0.5 mean (V - target)^2 (Brax ppo/losses.py: 0.5 * 0.5 mse)
    normalize_advantage: bool = True  #: standardise the advantages of each minibatch (paper Table 4; Brax ppo/losses.py)

    def validate(self) -> None:
        """The networks, positive rates, a clip in (0, 1), non-negative coefficients."""
        for part in ("actor", "critic"):
            getattr(self, part).validate(f"algo.{part}")
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name.startswith("lr_") and not (math.isfinite(value) and value > 0):
                raise FluxError(f"algo.{f.name} must be a positive finite number, got {value}")
        if not 0.0 < self.clip < 1.0:
            raise FluxError(f"algo.clip must lie in (0, 1), got {self.clip}")
        for key in ("max_grad_norm", "value_coef"):
            if not (math.isfinite(getattr(self, key)) and getattr(self, key) >= 0):
                raise FluxError(f"algo.{key} must be zero or positive, got {getattr(self, key)}")
