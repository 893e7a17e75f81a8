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


@dataclass
class NetConfig:
    """A backbone: ``None`` fields take the suite default (protocol.md section 3)."""

    backbone: str = "mlp"  #: mlp | simba | bronet (nets/backbones.py)
    width: int | None = None  #: hidden width; Gym 256, DMC 512 (paper A.3)
    depth: int | None = None  #: hidden layers (mlp) or residual blocks; Gym 2, DMC 3 (paper A.3)
    act: str | None = None  #: activation; Gym relu, DMC elu (paper A.3; flow-rl dmc/algo/sac.yaml)
    layer_norm: bool = False  #: LayerNorm after each hidden layer of an MLP (flow-rl sac.yaml: false)


@dataclass
class SACConfig:
    """Soft Actor-Critic with a tanh-Gaussian actor and automatic temperature (Haarnoja et al. 2018b)."""

    name: str = "sac"  #: algorithm name in the registry
    actor: NetConfig = field(default_factory=NetConfig)  #: actor backbone (paper A.3: SAC actor 2x256)
    critic: NetConfig = field(default_factory=NetConfig)  #: critic backbone (paper A.3)
    num_critics: int = 2  #: Q ensemble size (paper A.3)
    critic_agg: str = "min"  #: ensemble reduction for targets and the actor: min | mean (clipped double Q)
    discount: float = 0.99  #: gamma (paper Table 3)
    tau: float = 0.005  #: target EMA rate (paper A.3)
    lr_actor: float = 3e-4  #: actor Adam lr (paper A.3)
    lr_critic: float = 3e-4  #: critic Adam lr (paper A.3)
    lr_alpha: float = 3e-4  #: temperature Adam lr (flow-rl mujoco/algo/sac.yaml alpha_lr)
    init_alpha: float = 1.0  #: initial temperature, log alpha = 0 (flow-rl sac.py TunableCoefficient(0.0))
    target_entropy: float | None = None  #: None means -act_dim (Haarnoja et al. 2018b; flow-rl sac.py)
    log_std_min: float = -5.0  #: lower clip of the actor's log std (flow-rl SquashedGaussianActor)
    log_std_max: float = 2.0  #: upper clip of the actor's log std (flow-rl SquashedGaussianActor)


@dataclass
class TD3Config:
    """Twin Delayed DDPG (Fujimoto et al. 2018), defaults from flow-rl mujoco/algo/td3.yaml."""

    name: str = "td3"  #: algorithm name in the registry
    actor: NetConfig = field(default_factory=NetConfig)  #: actor backbone (flow-rl td3.yaml 2x256 relu)
    critic: NetConfig = field(default_factory=NetConfig)  #: critic backbone (paper A.3)
    num_critics: int = 2  #: Q ensemble size (Fujimoto et al. 2018)
    critic_agg: str = "min"  #: ensemble reduction for the target: min | mean
    discount: float = 0.99  #: gamma (paper Table 3)
    tau: float = 0.005  #: target EMA rate (flow-rl td3.yaml ema)
    lr_actor: float = 3e-4  #: actor Adam lr (flow-rl td3.yaml)
    lr_critic: float = 3e-4  #: critic Adam lr (flow-rl td3.yaml)
    policy_delay: int = 2  #: critic updates per actor and target update (flow-rl td3.yaml actor_update_freq)
    target_noise: float = 0.2  #: std of target policy smoothing noise (flow-rl td3.yaml)
    noise_clip: float = 0.5  #: clip of the smoothing noise (flow-rl td3.yaml)
    explore_noise: float = 0.1  #: std of Gaussian exploration noise (flow-rl td3.yaml)


def diffusion_actor() -> NetConfig:
    """The diffusion actor's network: 3 hidden Mish layers, width per suite (paper A.3: 3 x 256,
    DMC 512, Mish)."""
    return NetConfig(depth=3, act="mish")


@dataclass
class QSMConfig:
    """Q-Score Matching (Psenka et al. 2023): match the actor's score to grad_a Q / temperature."""

    name: str = "qsm"  #: algorithm name in the registry
    actor: NetConfig = field(default_factory=diffusion_actor)  #: denoiser MLP, depth counting its fused input layer (paper A.3: 3x256 Mish, DMC 512)
    critic: NetConfig = field(default_factory=NetConfig)  #: critic backbone (paper A.3)
    num_critics: int = 2  #: Q ensemble size (paper A.3; flow-rl qsm.py ensemble_size=2)
    critic_agg: str = "min"  #: ensemble reduction for the TD target and best-of-N picking (flow-rl qsm.py)
    discount: float = 0.99  #: gamma (paper Table 3)
    tau: float = 0.005  #: target EMA rate (paper A.3; flow-rl qsm.yaml ema)
    lr_actor: float = 3e-4  #: denoiser Adam lr, constant (paper A.3; flow-rl qsm.yaml diffusion.lr, no decay)
    lr_critic: float = 3e-4  #: critic Adam lr (paper A.3; flow-rl qsm.yaml critic_lr)
    model: str = "vp-cosine"  #: generative model; eps-predicting only: vp-cosine, vp-linear, ddpm, ddpm-linear (flow-rl qsm.py ContinuousDDPM, cosine)
    diffusion_steps: int = 20  #: denoising steps when sampling (paper A.3; flow-rl qsm.yaml diffusion.steps)
    time_dim: int = 64  #: Fourier time-embedding size (paper A.3; flow-rl qsm.yaml diffusion.time_dim)
    fourier_scale: float = 0.2  #: init std of the learned Fourier frequencies (flow-rl LearnableFourierEmbedding)
    obs_encoder_width: int = 128  #: width of the Mish MLP that encodes the state for the denoiser (flow-rl qsm.py cond_embedding)
    obs_encoder_depth: int = 2  #: layers of that state encoder, 0 for none (flow-rl qsm.py cond_embedding MLP(128, 128))
    temperature: float = 0.1  #: lambda: the score target is grad_a Q / lambda (paper A.3; flow-rl mujoco qsm.yaml temp; its DMC config uses 0.2)
    normalize_grad: bool = True  #: divide grad_a Q by its batch mean absolute value (flow-rl qsm.py; the QSM paper does not)
    grad_agg: str = "mean"  #: ensemble reduction of the target critic whose action gradient is matched (flow-rl qsm.py)
    num_samples: int = 10  #: actions drawn per state for best-of-N at evaluation (paper A.3; flow-rl qsm.yaml num_samples)
    explore_noise: float = 0.1  #: std of Gaussian noise added to the single training-time sample (flow-rl qsm.py sample_actions)

    def validate(self) -> None:
        """QSM-specific checks (:func:`resolve` calls this): values, and a model with a score."""
        from fluxrl.generative import MODELS, make_model
        from fluxrl.nets.critics import AGGREGATIONS

        if not (math.isfinite(self.temperature) and self.temperature > 0):
            raise FluxError(f"algo.temperature must be a positive number, got {self.temperature}")
        if not (math.isfinite(self.fourier_scale) and self.fourier_scale > 0):
            raise FluxError(f"algo.fourier_scale must be a positive number, got {self.fourier_scale}")
        for key in ("num_samples", "diffusion_steps", "time_dim", "obs_encoder_width"):
            if getattr(self, key) < 1:
                raise FluxError(f"algo.{key} must be at least 1, got {getattr(self, key)}")
        if self.time_dim % 2:
            raise FluxError(f"algo.time_dim must be even (cos and sin halves), got {self.time_dim}")
        if self.obs_encoder_depth < 0:
            raise FluxError(f"algo.obs_encoder_depth must be zero or positive, got "
                            f"{self.obs_encoder_depth}")
        if self.grad_agg not in AGGREGATIONS:
            raise FluxError(f"unknown algo.grad_agg={self.grad_agg!r}; choose one of: "
                            + ", ".join(AGGREGATIONS))
        model = make_model(self.model, steps=self.diffusion_steps)  # FluxError if unknown or bad
        if model.prediction != "eps":
            ok = [n for n, f in MODELS.items() if getattr(f, "func", f).prediction == "eps"]
            raise FluxError(f"algo.model={self.model!r} predicts {model.prediction}: QSM regresses "
                            f"the prediction on the score grad_a Q / lambda, which in "
                            f"{model.prediction} terms blows up (velocity: 1 / (1 - t) at t -> 1; "
                            f"x0: sigma^2), while as noise it is -sigma grad_a Q / lambda; choose an "
                            f"eps-predicting model: {', '.join(ok)}")


@dataclass
class Config:
    """A training run. ``steps``, ``warmup``, ``eval_every`` count simulator frames (paper Table 3)."""

    defaults: list[Any] = field(default_factory=lambda: ["_self_", {"algo": "sac"}])
    algo: Any = None  #: algorithm config group: ``algo=sac``, ``algo=td3`` or ``algo=qsm``
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


ALGO_CONFIGS: dict[str, type] = {"sac": SACConfig, "td3": TD3Config, "qsm": QSMConfig}

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
    for name, cls in ALGO_CONFIGS.items():
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
            cls = ALGO_CONFIGS[algo_name]
        elif part in ("actor", "critic"):
            cls = NetConfig
        else:
            cls = None


def compose(overrides: list[str]) -> Config:
    """Compose a :class:`Config` from Hydra overrides, or raise :class:`FluxError` in one line."""
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
            if value not in ALGO_CONFIGS:
                raise FluxError(f"unknown algorithm {value!r}; {close_matches(value, ALGO_CONFIGS)}")
            algo_name = value
    for ov in overrides:
        _check_key(ov.split("=", 1)[0], algo_name)
    _register()
    GlobalHydra.instance().clear()
    try:
        with initialize(version_base=None, config_path=None):
            cfg = hydra_compose(config_name="fluxrl", overrides=list(overrides))
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
    cls = ALGO_CONFIGS[algo["name"]]
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
