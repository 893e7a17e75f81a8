"""Typed configuration, composed by Hydra from ``key=value`` overrides.

A run's config is the run-level fields (task, seeds, budget, cadences, output, logging), the
algorithm under ``algo`` (its config class lives in its agent file, on the bases of
:mod:`fluxrl.agents.config`), and one trainer group for the algorithm's setting: ``off_policy``
(replay, warm-up, minibatches) today; the on-policy and offline groups arrive with their
programs. Budgets and cadences count simulator frames (paper Table 3); one agent step is
``action_repeat`` frames; ``update_index`` counts gradient updates.

Every field carries a one-line doc with the source of its default. Fields left ``None`` are filled
per suite by :func:`resolve` from :data:`SUITE_DEFAULTS` (paper Table 3 and Appendix A.3, quoted in
``shared/protocol.md``), so ``env=dmc/...`` gets the DMC settings without the user listing them.
"""

from __future__ import annotations

import dataclasses
import math
import sys
from dataclasses import dataclass, field
from typing import Any  # noqa: UP035 - OmegaConf needs typing.Optional

from fluxrl.agents.config import NetConfig
from fluxrl.agents.registry import algo_configs, get_algo
from fluxrl.errors import FluxError, close_matches
from fluxrl.task_defaults import task_defaults


@dataclass
class OffPolicyConfig:
    """The off-policy trainer (``off_policy.*``): replay buffer, warm-up, minibatches."""

    batch_size: int | None = None  #: minibatch; Gym 256, DMC 512 (paper Table 3)
    buffer_size: int = 1_000_000  #: replay capacity in transitions (paper Table 3); a run allocates min(buffer_size, its agent steps) rows and grows them when resumed with a larger budget
    warmup_frames: int | None = None  #: random-action frames before the first update; Gym 5K, DMC 10K (Table 3)
    updates_per_step: int = 1  #: gradient updates per agent step, run with lax.scan (flow-rl utd: 1)

    def resolve(self, suite: dict, frames: int, action_repeat: int) -> OffPolicyConfig:
        """Fill the suite defaults and check the values against the run's budget."""
        new = dataclasses.replace(self)
        for key in ("batch_size", "warmup_frames"):
            if getattr(new, key) is None:
                setattr(new, key, suite["off_policy"][key])
        for key in ("batch_size", "buffer_size", "updates_per_step"):
            if getattr(new, key) <= 0:
                raise FluxError(f"off_policy.{key} must be a positive number, got "
                                f"off_policy.{key}={getattr(new, key)}")
        if new.warmup_frames < 0:
            raise FluxError(f"off_policy.warmup_frames must be zero or positive, got "
                            f"off_policy.warmup_frames={new.warmup_frames}")
        if new.batch_size > new.buffer_size:
            raise FluxError(f"off_policy.batch_size={new.batch_size} exceeds "
                            f"off_policy.buffer_size={new.buffer_size}; lower the batch or "
                            "raise the buffer")
        if new.warmup_frames >= frames:
            raise FluxError(f"frames={frames} is not beyond off_policy.warmup_frames="
                            f"{new.warmup_frames}: the run would never update its agent; raise "
                            "frames or lower off_policy.warmup_frames")
        if new.warmup_frames < new.batch_size * action_repeat:
            raise FluxError(f"off_policy.warmup_frames={new.warmup_frames} is too short to fill "
                            f"one batch of {new.batch_size}; set off_policy.warmup_frames>="
                            f"{new.batch_size * action_repeat}")
        return new


@dataclass
class OnPolicyConfig:
    """The on-policy trainer (``on_policy.*``): rollouts of vmapped JAX envs, GAE, epochs x
    minibatches (paper Table 4 unless a field says otherwise; Brax's names in brackets)."""

    num_envs: int = 1024  #: environments stepped together per seed (paper Table 4: 1024)
    unroll_length: int = 24  #: steps per environment per unroll (paper Table 4: 24)
    unrolls_per_iteration: int = 1  #: unrolls collected before an update; Brax collects batch_size x num_minibatches / num_envs of them (Playground DMC: 16)
    num_minibatches: int = 4  #: minibatches per epoch (paper Table 4: 4)
    update_epochs: int = 4  #: passes over each rollout [num_updates_per_batch] (paper Table 4: 4)
    discount: float = 0.99  #: gamma [discounting] (rsl_rl PPO and IsaacLab agents: 0.99)
    gae_lambda: float = 0.95  #: GAE lambda (paper Table 4; Brax: 0.95)
    reward_scaling: float = 1.0  #: rewards are multiplied by this for GAE and the value loss (Brax; Playground DMC: 10)
    normalize_observations: bool = True  #: running mean / std normalisation of observations, kept in every checkpoint (Brax; Playground DMC: true)
    iterations_per_chunk: int = 1  #: iterations per device call; the host sees the state only between calls (cadences fire at the end of the chunk that crosses them)
    physics: str = "jax"  #: MuJoCo Playground's physics implementation for playground/ envs: jax (MJX) or warp (MuJoCo Warp); jax runs on a CPU

    def resolve(self, suite: dict, frames: int, action_repeat: int) -> OnPolicyConfig:
        """Check the values: positive sizes, minibatches that divide the rollout."""
        new = dataclasses.replace(self)
        for key in ("num_envs", "unroll_length", "unrolls_per_iteration", "num_minibatches",
                    "update_epochs", "iterations_per_chunk"):
            if getattr(new, key) <= 0:
                raise FluxError(f"on_policy.{key} must be a positive number, got "
                                f"on_policy.{key}={getattr(new, key)}")
        for key in ("discount", "gae_lambda"):
            if not 0.0 <= getattr(new, key) <= 1.0:
                raise FluxError(f"on_policy.{key} must lie in [0, 1], got {getattr(new, key)}")
        if not (math.isfinite(new.reward_scaling) and new.reward_scaling > 0):
            raise FluxError(f"on_policy.reward_scaling must be positive, got {new.reward_scaling}")
        steps = new.num_envs * new.unroll_length * new.unrolls_per_iteration
        if steps % new.num_minibatches:
            raise FluxError(f"on_policy.num_minibatches={new.num_minibatches} does not divide the "
                            f"{steps} steps of a rollout (num_envs x unroll_length x "
                            "unrolls_per_iteration); choose a divisor")
        from fluxrl.envs.playground import PHYSICS

        if new.physics not in PHYSICS:
            raise FluxError(f"on_policy.physics={new.physics!r} is not a Playground "
                            "implementation; choose one of: " + ", ".join(PHYSICS))
        if action_repeat != 1:
            raise FluxError(f"action_repeat={action_repeat}: the on-policy program steps JAX "
                            "environments once per action; set action_repeat=1")
        return new


#: The trainer group of each setting that has a program: ``setting -> group config class``; the
#: group's key in :class:`Config` is the setting's name.
TRAINERS: dict[str, type] = {"off_policy": OffPolicyConfig, "on_policy": OnPolicyConfig}


@dataclass
class Config:
    """A training run. ``frames``, ``eval_every``, ``log_every`` and ``checkpoint_every`` count
    simulator frames (paper Table 3)."""

    defaults: list[Any] = field(default_factory=lambda: ["_self_", {"algo": "sac"}])
    algo: Any = None  #: algorithm config group, ``algo=<name>`` (``fluxrl algos`` lists them)
    env: str = "gym/HalfCheetah-v5"  #: task, ``gym/<Gymnasium id>``, ``dmc/<domain>-<task>`` (host simulators) or ``jax/<Name>`` (JAX, on-policy)
    seed: int = 0  #: first seed; member k of the group uses seed + k (paper: seeds 0-4)
    seeds: int = 1  #: independent agents trained together as one vmapped program
    frames: int = 1_000_000  #: training budget, simulator frames per seed (paper Table 3: 1M); resume= with a larger value extends a run
    action_repeat: int | None = None  #: frame skip, frames per agent step; Gym 1, DMC 2 (paper Table 3)
    eval_every: int = 10_000  #: frames between evaluations (paper Table 3)
    eval_episodes: int = 10  #: episodes per evaluation, run as one batch (paper Table 3)
    log_every: int = 1_000  #: frames between training-metric rows (flow-rl log_frames)
    checkpoint_every: int = 50_000  #: frames between checkpoints; 0 writes none on the way, only the final one (eval and resume= need it) and one on Ctrl-C
    run_dir: str | None = None  #: output directory; None means runs/<algo>-<env>-<time>
    resume: str | None = None  #: a run directory to continue from its newest intact checkpoint
    tensorboard: bool = True  #: write TensorBoard event files under run_dir/tb
    wandb: bool = False  #: also log to Weights & Biases (pip install 'fluxrl[wandb]')
    wandb_project: str = "fluxrl"  #: W&B project name
    progress: bool = True  #: console progress bar (frames/s, ETA, last evaluation)
    plot: bool = True  #: write run_dir/curves.png at the end of training
    off_policy: Any = None  #: the off-policy trainer group (OffPolicyConfig); set for off-policy algorithms only
    on_policy: Any = None  #: the on-policy trainer group (OnPolicyConfig); set for on-policy algorithms only

    @property
    def trainer(self) -> Any:
        """The trainer group of this run's setting (e.g. ``cfg.off_policy``)."""
        return getattr(self, get_algo(self.algo.name).setting)


#: Keys of earlier versions: ``old key -> new key`` (the CLI and old runs' config.yaml say so).
RENAMED: dict[str, str] = {
    "steps": "frames", "warmup": "off_policy.warmup_frames",
    "batch_size": "off_policy.batch_size", "buffer_size": "off_policy.buffer_size",
    "updates_per_step": "off_policy.updates_per_step",
}

#: Suite-dependent defaults (paper Table 3 and Appendix A.3, protocol.md sections 2-3).
SUITE_DEFAULTS: dict[str, dict[str, Any]] = {
    "gym": {"action_repeat": 1, "off_policy": {"batch_size": 256, "warmup_frames": 5_000},
            "net": {"width": 256, "depth": 2, "act": "relu"}},
    "dmc": {"action_repeat": 2, "off_policy": {"batch_size": 512, "warmup_frames": 10_000},
            "net": {"width": 512, "depth": 3, "act": "elu"}},
    "jax": {"action_repeat": 1, "off_policy": {}, "net": {"width": 256, "depth": 3, "act": "elu"}},
    "playground": {"action_repeat": 1, "off_policy": {},
                   "net": {"width": 256, "depth": 3, "act": "elu"}},
    "isaaclab": {"action_repeat": 1, "off_policy": {},
                 "net": {"width": 256, "depth": 3, "act": "elu"}},
}


def _register(setting: str) -> str:
    """Store the run config of ``setting`` and every algorithm config with Hydra; return the
    run config's name."""
    from hydra.core.config_store import ConfigStore

    cs = ConfigStore.instance()
    name = f"fluxrl_{setting}"
    group = [{setting: "default"}] if setting in TRAINERS else []
    cs.store(name=name, node=Config(defaults=["_self_", {"algo": "sac"}, *group]))
    for s, cls in TRAINERS.items():
        cs.store(group=s, name="default", node=cls)
    for algo, cls in algo_configs().items():
        cs.store(group="algo", name=algo, node=cls)
    return name


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
        elif cls is Config and part in TRAINERS:
            setting = get_algo(algo_name).setting
            if part != setting:
                raise FluxError(f"{key!r} does not apply: algo={algo_name} trains {setting}, "
                                f"so its trainer keys are {setting}.*")
            cls = TRAINERS[part]
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
        if key in RENAMED:
            raise FluxError(f"{key} is now {RENAMED[key]}; write {RENAMED[key]}={value}")
        if key == "algo":
            if value not in algo_configs():
                raise FluxError(f"unknown algorithm {value!r}; {close_matches(value, algo_configs())}")
            algo_name = value
    for ov in overrides:
        _check_key(ov.split("=", 1)[0], algo_name)
    config_name = _register(get_algo(algo_name).setting)
    GlobalHydra.instance().clear()
    try:
        with initialize(version_base=None, config_path=None):
            cfg = hydra_compose(config_name=config_name, overrides=list(overrides))
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


def from_dict(data: dict, source: str = "config.yaml", warn: Any = None) -> Config:
    """Rebuild a :class:`Config` from the resolved ``config.yaml`` of a run directory.

    Keys of earlier versions (:data:`RENAMED`) are moved to their new place; a key this version
    does not know is a :class:`FluxError` naming it and ``source``; a key it lacks takes today's
    default, with one warning line naming the default (``warn(line)``, stderr by default)."""
    warn = warn or (lambda line: print(f"fluxrl: warning: {line}", file=sys.stderr))
    data = {k: v for k, v in data.items() if k != "defaults"}
    if not isinstance(data.get("algo"), dict) or data["algo"].get("name") not in algo_configs():
        name = data.get("algo", {}).get("name") if isinstance(data.get("algo"), dict) else None
        raise FluxError(f"{source} names no known algorithm (algo.name={name!r}); "
                        f"{close_matches(str(name), algo_configs())}")
    algo = dict(data.pop("algo"))
    setting = get_algo(algo["name"]).setting
    moved = [old for old in RENAMED if old in data]
    for old in moved:
        group, _, key = RENAMED[old].rpartition(".")
        target = data.setdefault(group, {}) if group else data
        target[key] = data.pop(old)
    if moved:
        warn(f"{source} was written by an earlier fluxrl: read "
             + ", ".join(f"{old} as {RENAMED[old]}" for old in moved))

    def build(cls: type, values: dict, where: str) -> Any:
        known = {f.name: f for f in dataclasses.fields(cls) if f.name != "defaults"}
        unknown = sorted(set(values) - set(known))
        if unknown:
            raise FluxError(f"{source} has key {where}{unknown[0]} that this fluxrl does not "
                            f"know ({close_matches(unknown[0], known)}); it was written by "
                            "another version: edit the file or run that version")
        for missing in sorted(set(known) - set(values)):
            f = known[missing]
            if missing in ("algo", setting) or f.name in TRAINERS:
                continue
            default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
            warn(f"{source} has no {where}{missing}; using today's default {default!r}")
        return values

    build(Config, data, "")
    nets = {k: NetConfig(**build(NetConfig, algo[k], f"algo.{k}."))
            for k in ("actor", "critic") if isinstance(algo.get(k), dict)}
    algo_obj = algo_configs()[algo["name"]](**{**build(algo_configs()[algo["name"]], algo,
                                                      "algo."), **nets})
    groups = {}
    for s, cls in TRAINERS.items():
        values = data.pop(s, None)
        if s == setting:
            groups[s] = cls(**build(cls, values or {}, f"{s}."))
        elif values:
            raise FluxError(f"{source} has a {s} group, but algo={algo['name']} trains {setting}")
    return Config(algo=algo_obj, **data, **groups)


def to_dict(cfg: Config) -> dict:
    """Plain-dict form of a config (written to ``run_dir/config.yaml``); groups of other
    settings (None) are left out."""
    d = dataclasses.asdict(cfg)
    d.pop("defaults", None)
    for s in TRAINERS:
        if d.get(s) is None:
            d.pop(s, None)
    return d


def resolve(cfg: Config) -> Config:
    """Fill suite defaults and check every value, raising :class:`FluxError` before any compile."""
    from fluxrl.envs import check_env_name

    info = get_algo(cfg.algo.name)
    suite, _ = check_env_name(cfg.env)
    from fluxrl.envs import JAX_SUITES, TORCH_SUITES

    if (info.setting == "on_policy") != (suite in JAX_SUITES + TORCH_SUITES):
        if info.setting == "on_policy":
            raise FluxError(f"algo={info.name} trains on-policy on batched environments (jax/..., "
                            f"playground/..., isaaclab/...); env={cfg.env} is a single host "
                            "simulator: choose one of those suites")
        raise FluxError(f"algo={info.name} trains {info.setting} on host simulators; env={cfg.env} "
                        "is a batched environment: choose a gym/... or dmc/... env, or an "
                        "on-policy algorithm (ppo)")
    sd = SUITE_DEFAULTS[suite]
    cfg = dataclasses.replace(cfg)
    if cfg.action_repeat is None:
        cfg.action_repeat = sd["action_repeat"]
    algo = dataclasses.replace(cfg.algo)
    for f in dataclasses.fields(algo):
        net = getattr(algo, f.name)
        if isinstance(net, NetConfig):
            net = dataclasses.replace(net)
            for key, val in sd["net"].items():
                if getattr(net, key) is None:
                    setattr(net, key, val)
            setattr(algo, f.name, net)
    cfg.algo = algo
    for key in ("seeds", "frames", "action_repeat", "eval_every", "eval_episodes", "log_every"):
        if getattr(cfg, key) <= 0:
            raise FluxError(f"{key} must be a positive number, got {key}={getattr(cfg, key)}")
    for key in ("seed", "checkpoint_every"):
        if getattr(cfg, key) < 0:
            raise FluxError(f"{key} must be zero or positive, got {key}={getattr(cfg, key)}")
    if info.setting not in TRAINERS:
        raise FluxError(f"algo={info.name} trains {info.setting}, which has no trainer in this "
                        f"version (trainers: {', '.join(TRAINERS)})")
    group = getattr(cfg, info.setting) or TRAINERS[info.setting]()
    setattr(cfg, info.setting, group.resolve(sd, cfg.frames, cfg.action_repeat))
    algo.validate()  # the algorithm's own checks live with its config
    return cfg
