"""Typed configuration, composed by Hydra from ``key=value`` overrides.

Every field carries a one-line doc with the source of its default. Fields left ``None`` are filled
per suite by :func:`resolve` from :data:`SUITE_DEFAULTS` (paper Table 3 and Appendix A.3, quoted in
``shared/protocol.md``), so ``env=dmc/...`` gets the DMC settings without the user listing them.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any  # noqa: UP035 - OmegaConf needs typing.Optional

from fluxrl.errors import FluxError, close_matches
from fluxrl.task_defaults import task_defaults


@dataclass
class NetConfig:
    """A backbone: ``None`` fields take the suite default (protocol.md section 3)."""

    backbone: str = "mlp"  #: mlp | simba | bronet (nets/backbones.py)
    width: int | None = None  #: hidden width; Gym 256, DMC 512 (paper A.3)
    depth: int | None = None  #: hidden layers (mlp) or residual blocks; Gym 2, DMC 3 (paper A.3)
    act: str | None = None  #: activation; Gym relu, DMC elu (paper A.3; flow-rl dmc/algo/sac.yaml)
    layer_norm: bool = False  #: LayerNorm after each hidden layer of an MLP (flow-rl sac.yaml: false)


@dataclass
class AlgoConfig:
    """Fields every off-policy actor-critic shares; each algorithm's config (in its agent file)
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
        """Checks shared by every algorithm (subclasses extend this)."""
        for key in ("best_of_eval", "best_of_act"):
            if getattr(self, key) < 1:
                raise FluxError(f"algo.{key} must be at least 1 (1 turns best-of-N off), got "
                                f"{getattr(self, key)}")


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


@dataclass
class Config:
    """A training run. ``steps``, ``warmup``, ``eval_every`` count simulator frames (paper Table 3)."""

    defaults: list[Any] = field(default_factory=lambda: ["_self_", {"algo": "sac"}])
    algo: Any = None  #: algorithm config group, ``algo=<name>`` (``fluxrl algos`` lists them)
    env: str = "gym/HalfCheetah-v5"  #: task, ``gym/<Gymnasium id>`` or ``dmc/<domain>-<task>``
    seed: int = 0  #: first seed; member k of the group uses seed + k (paper: seeds 0-4)
    seeds: int = 1  #: independent agents trained together as one vmapped program
    steps: int = 1_000_000  #: training frames per seed (paper Table 3: 1M)
    batch_size: int | None = None  #: minibatch; Gym 256, DMC 512 (paper Table 3)
    buffer_size: int = 1_000_000  #: replay capacity in transitions (paper Table 3)
    warmup: int | None = None  #: random-action frames before updates; Gym 5K, DMC 10K (Table 3)
    updates_per_step: int = 1  #: gradient updates per agent step, run with lax.scan (flow-rl utd: 1)
    action_repeat: int | None = None  #: frame skip; Gym 1, DMC 2 (paper Table 3)
    eval_every: int = 10_000  #: frames between evaluations (paper Table 3)
    eval_episodes: int = 10  #: episodes per evaluation, run as one batch (paper Table 3)
    log_every: int = 1_000  #: frames between training-metric rows (flow-rl log_frames)
    checkpoint_every: int = 50_000  #: frames between checkpoints (0 disables)
    run_dir: str | None = None  #: output directory; None means runs/<algo>-<env>-<time>
    resume: str | None = None  #: a run directory to continue from its last checkpoint
    tensorboard: bool = True  #: write TensorBoard event files under run_dir/tb
    wandb: bool = False  #: also log to Weights & Biases (pip install 'fluxrl[wandb]')
    wandb_project: str = "fluxrl"  #: W&B project name
    progress: bool = True  #: console progress bar (steps/s, ETA, last evaluation)
    plot: bool = True  #: write run_dir/curves.png at the end of training


def algo_configs() -> dict[str, type]:
    """``algo name -> config dataclass`` of every registered algorithm (each agent file defines its
    config next to its code)."""
    from fluxrl.agents.base import load_registry

    return {name: info.config for name, info in load_registry().items()}

#: Suite-dependent defaults (paper Table 3 and Appendix A.3, protocol.md sections 2-3).
SUITE_DEFAULTS: dict[str, dict[str, Any]] = {
    "gym": {"batch_size": 256, "warmup": 5_000, "action_repeat": 1,
            "net": {"width": 256, "depth": 2, "act": "relu"}},
    "dmc": {"batch_size": 512, "warmup": 10_000, "action_repeat": 2,
            "net": {"width": 512, "depth": 3, "act": "elu"}},
}


def _register() -> None:
    from hydra.core.config_store import ConfigStore

    cs = ConfigStore.instance()
    cs.store(name="fluxrl", node=Config)
    for name, cls in algo_configs().items():
        cs.store(group="algo", name=name, node=cls)


def _one_line(exc: Exception) -> str:
    msg = str(exc).strip().splitlines()
    first = msg[0] if msg else type(exc).__name__
    full_key = next((m.split(":", 1)[1].strip() for m in msg if m.strip().startswith("full_key:")), "")
    return first + (f" (key {full_key})" if full_key and full_key not in first else "")


def _check_key(key: str, algo_name: str) -> None:
    """Walk a dotted key through the config dataclasses; unknown parts are a FluxError."""
    cls: type | None = Config
    parts = key.split(".")
    for i, part in enumerate(parts):
        if cls is None:
            raise FluxError(f"unknown config key {key!r}: {'.'.join(parts[:i])} has no fields")
        names = {f.name: f for f in dataclasses.fields(cls)} if dataclasses.is_dataclass(cls) else {}
        names.pop("defaults", None)
        if part not in names:
            where = f"{'.'.join(parts[:i]) or 'the run config'} ({cls.__name__})"
            raise FluxError(f"unknown config key {key!r}: no field {part!r} in {where}; "
                            f"{close_matches(part, names)}")
        if cls is Config and part == "algo":
            cls = algo_configs()[algo_name]
        elif part in ("actor", "critic"):
            cls = NetConfig
        else:
            cls = None


def compose(overrides: list[str]) -> Config:
    """Compose a :class:`Config` from Hydra overrides, or raise :class:`FluxError` in one line.

    The algorithm's per-suite and per-task defaults (:data:`fluxrl.task_defaults.TASK_DEFAULTS`)
    for the chosen ``env`` are applied here, to every key the overrides leave unset."""
    from hydra import compose as hydra_compose
    from hydra import initialize
    from hydra.core.global_hydra import GlobalHydra
    from omegaconf import OmegaConf

    algo_name = "sac"
    for ov in overrides:
        if "=" not in ov:
            raise FluxError(f"argument {ov!r} is not key=value; e.g. algo=sac env=gym/Hopper-v5")
        key, value = ov.split("=", 1)
        if key.startswith(("+", "~")):
            raise FluxError(f"{ov!r}: fluxrl configs have a fixed set of keys, so '+' and '~' "
                            f"are not needed; write {key.lstrip('+~')}={value}")
        if key == "algo":
            if value not in algo_configs():
                raise FluxError(f"unknown algorithm {value!r}; {close_matches(value, algo_configs())}")
            algo_name = value
    for ov in overrides:
        _check_key(ov.split("=", 1)[0], algo_name)
    _register()
    GlobalHydra.instance().clear()
    try:
        with initialize(version_base=None, config_path=None):
            cfg = hydra_compose(config_name="fluxrl", overrides=list(overrides))
        explicit = {ov.split("=", 1)[0] for ov in overrides}
        for key, value in task_defaults(algo_name, cfg.env, explicit).items():
            OmegaConf.update(cfg, key, value, merge=False)
    except Exception as exc:  # hydra and omegaconf raise many types; all are user errors here
        text = _one_line(exc.__cause__ or exc)
        if "not in struct" in text or "Could not override" in text or "Key '" in text:
            key = text.split("'")[1] if "'" in text else "?"
            raise FluxError(f"unknown config key {key!r}: {text}") from None
        raise FluxError(f"bad config value: {text}") from None
    finally:
        GlobalHydra.instance().clear()
    obj = OmegaConf.to_object(cfg)
    assert isinstance(obj, Config)
    return obj


def from_dict(data: dict) -> Config:
    """Rebuild a :class:`Config` from the resolved ``config.yaml`` of a run directory."""
    data = dict(data)
    algo = data.pop("algo")
    cls = algo_configs()[algo["name"]]
    nets = {k: NetConfig(**algo[k]) for k in ("actor", "critic") if k in algo}
    algo_obj = cls(**{**algo, **nets})
    data.pop("defaults", None)
    return Config(algo=algo_obj, **data)


def to_dict(cfg: Config) -> dict:
    """Plain-dict form of a config (written to ``run_dir/config.yaml``)."""
    d = dataclasses.asdict(cfg)
    d.pop("defaults", None)
    return d


def resolve(cfg: Config) -> Config:
    """Fill suite defaults and check every value, raising :class:`FluxError` before any compile."""
    from fluxrl.envs import check_env_name
    from fluxrl.nets.backbones import BACKBONES, activation
    from fluxrl.nets.critics import AGGREGATIONS

    suite, _ = check_env_name(cfg.env)
    sd = SUITE_DEFAULTS[suite]
    cfg = dataclasses.replace(cfg)
    for key in ("batch_size", "warmup", "action_repeat"):
        if getattr(cfg, key) is None:
            setattr(cfg, key, sd[key])
    algo = dataclasses.replace(cfg.algo)
    for part in ("actor", "critic"):
        net = dataclasses.replace(getattr(algo, part))
        for key, val in sd["net"].items():
            if getattr(net, key) is None:
                setattr(net, key, val)
        if net.backbone not in BACKBONES:
            raise FluxError(f"unknown backbone algo.{part}.backbone={net.backbone!r}; "
                            f"{close_matches(net.backbone, BACKBONES)}")
        activation(net.act)
        for key in ("width", "depth"):
            if getattr(net, key) <= 0:
                raise FluxError(f"algo.{part}.{key} must be positive, got {getattr(net, key)}")
        setattr(algo, part, net)
    cfg.algo = algo
    positive = ["seeds", "steps", "batch_size", "buffer_size", "updates_per_step", "action_repeat",
                "eval_every", "eval_episodes", "log_every"]
    for key in positive:
        if getattr(cfg, key) <= 0:
            raise FluxError(f"{key} must be a positive number, got {key}={getattr(cfg, key)}")
    for key in ("warmup", "checkpoint_every"):
        if getattr(cfg, key) < 0:
            raise FluxError(f"{key} must be zero or positive, got {key}={getattr(cfg, key)}")
    if cfg.warmup < cfg.batch_size * cfg.action_repeat and cfg.warmup < cfg.steps:
        raise FluxError(f"warmup={cfg.warmup} frames is too short to fill one batch of "
                        f"{cfg.batch_size}; set warmup>={cfg.batch_size * cfg.action_repeat}")
    if algo.num_critics < 1:
        raise FluxError(f"algo.num_critics must be at least 1, got {algo.num_critics}")
    if algo.critic_agg not in AGGREGATIONS:
        raise FluxError(f"unknown algo.critic_agg={algo.critic_agg!r}; choose one of: "
                        + ", ".join(AGGREGATIONS))
    for key in ("discount", "tau"):
        if not 0.0 <= getattr(algo, key) <= 1.0:
            raise FluxError(f"algo.{key} must lie in [0, 1], got {getattr(algo, key)}")
    for key in [f.name for f in dataclasses.fields(algo) if f.name.startswith("lr_")]:
        if not math.isfinite(getattr(algo, key)) or getattr(algo, key) <= 0:
            raise FluxError(f"algo.{key} must be a positive finite number, got {getattr(algo, key)}")
    if cfg.seed < 0:
        raise FluxError(f"seed must be zero or positive, got seed={cfg.seed}")
    checks = {"init_alpha": lambda v: v > 0, "policy_delay": lambda v: v >= 1,
              "target_noise": lambda v: v >= 0, "noise_clip": lambda v: v >= 0,
              "explore_noise": lambda v: v >= 0}
    for key, ok in checks.items():
        if hasattr(algo, key) and not (math.isfinite(getattr(algo, key)) and ok(getattr(algo, key))):
            bound = "positive" if key == "init_alpha" else (
                "at least 1" if key == "policy_delay" else "zero or positive")
            raise FluxError(f"algo.{key} must be {bound}, got {getattr(algo, key)}")
    if hasattr(algo, "log_std_min") and not algo.log_std_min < algo.log_std_max:
        raise FluxError(f"algo.log_std_min ({algo.log_std_min}) must be below algo.log_std_max "
                        f"({algo.log_std_max})")
    if hasattr(algo, "validate"):  # algorithm-specific checks live with the algorithm's config
        algo.validate()
    return cfg
