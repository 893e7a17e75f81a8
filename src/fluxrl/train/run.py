"""``train(cfg)``: pick the program of the algorithm's setting and let the harness run it;
``evaluate_run``: evaluate a run directory's newest checkpoint (``fluxrl eval``)."""

from __future__ import annotations

import dataclasses
import sys
import time
from pathlib import Path
from typing import Any

import yaml

from fluxrl.agents.registry import get_algo
from fluxrl.config import Config, from_dict, resolve, to_dict
from fluxrl.errors import FluxError
from fluxrl.train import checkpoint
from fluxrl.train.harness import RunResult, check_writable, run

#: Keys that may change when a run is resumed: the budget, cadences, output, and the optimiser's
#: learning rates (``algo.lr_*``, to rescue a diverging run); everything else is the saved run's.
RESUMABLE = {"frames", "progress", "tensorboard", "wandb", "wandb_project", "plot", "eval_every",
             "log_every", "checkpoint_every"}

__all__ = ["RunResult", "evaluate_run", "load_run_config", "prepare", "train"]


def _warn(line: str) -> None:
    print(f"fluxrl: {line}", file=sys.stderr)


def programs() -> dict[str, type]:
    """``setting -> program class`` of every setting with a trainer."""
    from fluxrl.train.off_policy import OffPolicyProgram
    from fluxrl.train.on_policy import OnPolicyProgram

    return {"off_policy": OffPolicyProgram, "on_policy": OnPolicyProgram}


def program_class(cfg: Config) -> type:
    """The program that trains ``cfg``: its setting's, in the host-stepped form for on-policy
    runs on torch simulators (``isaaclab/...``)."""
    from fluxrl.envs import TORCH_SUITES

    setting = get_algo(cfg.algo.name).setting
    if setting == "on_policy" and cfg.env.split("/", 1)[0] in TORCH_SUITES:
        from fluxrl.train.on_policy_host import HostOnPolicyProgram

        return HostOnPolicyProgram
    return programs()[setting]


def load_run_config(run_dir: Path) -> Config:
    """The resolved config saved in a run directory, or a FluxError if none is there."""
    f = Path(run_dir) / "config.yaml"
    if not f.exists():
        raise FluxError(f"{run_dir} holds no fluxrl run (no config.yaml); pass the run_dir of an "
                        "earlier `fluxrl train`")
    try:
        data = yaml.safe_load(f.read_text())
    except yaml.YAMLError as exc:
        raise FluxError(f"{f} is not valid YAML ({str(exc).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise FluxError(f"{f} holds no config mapping")
    return from_dict(data, str(f), warn=lambda line: _warn(f"warning: {line}"))


def _value(cfg: Any, key: str) -> Any:
    for part in key.split("."):
        cfg = getattr(cfg, part, None)
    return cfg


def _is_resumable(key: str) -> bool:
    return key in RESUMABLE or key.startswith("algo.lr_")


def prepare(cfg: Config, overrides: list[str] | None = None) -> tuple[Config, Path, bool, dict]:
    """Resolve the config and the run directory; every user error surfaces here, before any
    compile. Returns ``(config, run_dir, resume, changes)``; ``resume`` is true when the run
    continues (or restarts) in a directory that already holds it."""
    overrides = overrides or []
    if cfg.resume:
        run_dir = Path(cfg.resume)
        saved = load_run_config(run_dir)
        new = cfg  # as composed: an overridden key holds exactly what the user wrote
        changes, refused = {}, []
        for key in dict.fromkeys(o.split("=", 1)[0] for o in overrides):
            if key in ("resume", "run_dir") or _value(saved, key) == _value(new, key) or (
                    key == "algo" and saved.algo.name == new.algo.name):
                continue
            if _is_resumable(key):
                changes[key] = _value(new, key)
            else:
                refused.append(f"{key} ({_value(saved, key)!r} -> {_value(new, key)!r})")
        if cfg.run_dir and Path(cfg.run_dir) != run_dir:
            refused.append(f"run_dir ({run_dir} -> {cfg.run_dir}: a resumed run stays in its "
                           "directory)")
        if refused:
            raise FluxError(f"cannot change {', '.join(refused)} when resuming; only frames, the "
                            "cadences, the output switches and algo.lr_* may change: start a new "
                            "run for the rest")
        out = saved
        for key, value in changes.items():
            out = _replace(out, key, value)
        out = resolve(dataclasses.replace(out, resume=str(run_dir), run_dir=str(run_dir)))
        check_writable(run_dir)
        return out, run_dir, True, changes
    cfg = resolve(cfg)
    name = f"{cfg.algo.name}-{cfg.env.replace('/', '-')}-{time.strftime('%Y%m%d-%H%M%S')}"
    run_dir = Path(cfg.run_dir or Path("runs") / name)
    takeover = (run_dir / "config.yaml").exists()
    if takeover and checkpoint.latest_step(run_dir) is not None:
        raise FluxError(f"run_dir={run_dir} already holds a run (checkpoint at frame "
                        f"{checkpoint.latest_step(run_dir)}); continue it with resume={run_dir}, "
                        "or pick another run_dir")
    check_writable(run_dir)
    if takeover:
        _warn(f"{run_dir} held a run that stopped before its first checkpoint; starting over in it")
    return dataclasses.replace(cfg, run_dir=str(run_dir)), run_dir, takeover, {}


def _replace(cfg: Any, key: str, value: Any) -> Any:
    head, _, rest = key.partition(".")
    if not rest:
        return dataclasses.replace(cfg, **{head: value})
    return dataclasses.replace(cfg, **{head: _replace(getattr(cfg, head), rest, value)})


def train(cfg: Config, overrides: list[str] | None = None) -> RunResult:
    """Train ``cfg.seeds`` agents together with the program of the algorithm's setting."""
    cfg, run_dir, resume, changes = prepare(cfg, overrides)
    seeds = [cfg.seed + k for k in range(cfg.seeds)]
    lr_keys = [f"algo.{f.name}" for f in dataclasses.fields(cfg.algo) if f.name.startswith("lr_")]
    return run(lambda: program_class(cfg)(cfg, seeds), run_dir=run_dir, seeds=seeds,
               config=to_dict(cfg), frames=cfg.frames, resume=resume, changes=changes,
               cadence={"eval_every": cfg.eval_every, "log_every": cfg.log_every,
                        "checkpoint_every": cfg.checkpoint_every},
               logging={"progress": cfg.progress, "tensorboard": cfg.tensorboard,
                        "wandb": cfg.wandb, "wandb_project": cfg.wandb_project,
                        "plot": cfg.plot, "desc": f"{cfg.algo.name} {cfg.env} x{len(seeds)}"},
               lr_keys=lr_keys, log=_warn)


def evaluate_run(run_dir: Path, episodes: int = 10, video: bool = False) -> dict:
    """Evaluate a run's newest intact checkpoint; with ``video``, write one mp4 per seed to
    ``run_dir/videos`` (headless rendering, ``MUJOCO_GL=egl`` by default)."""
    from fluxrl.envs import make_env

    run_dir = Path(run_dir)
    cfg = load_run_config(run_dir)
    if episodes <= 0:
        raise FluxError(f"--episodes must be positive, got {episodes}")
    on_device = get_algo(cfg.algo.name).setting == "on_policy"
    if video and cfg.env.split("/", 1)[0] == "isaaclab":
        raise FluxError(f"{run_dir} trained on {cfg.env}; videos of IsaacLab runs are not "
                        "available in this version (use IsaacLab's own recorder)")
    if video:
        check_writable(run_dir / "videos")
    cfg = resolve(cfg)
    ckpt = checkpoint.open_latest(run_dir, log=_warn)
    if ckpt is None:
        raise FluxError(f"{run_dir} holds no checkpoint yet; train longer or wait for the first "
                        "checkpoint")
    seeds = [cfg.seed + k for k in range(cfg.seeds)]
    program = program_class(cfg)(
        dataclasses.replace(cfg, eval_episodes=episodes if on_device else 1), seeds)
    envs: list = []
    frames: list | None = [] if video else None
    fps = max(1, int(round(50 / cfg.action_repeat)))
    try:
        state = program.restore(ckpt)
        if on_device:  # batched on the device, no host env
            rets, lens = program.evaluate(state, frames=frames)
            fps = getattr(getattr(program, "env", None), "fps", fps)
        else:
            envs = [[make_env(cfg.env, cfg.action_repeat, render=video and j == 0)
                     for j in range(episodes)] for _ in seeds]
            rets, lens = program.evaluate(state, envs, frames)
    finally:
        program.close()
    out = {"frame": ckpt.frame, "returns": rets, "lengths": lens, "videos": []}
    if video:
        from fluxrl.video import write_mp4

        for i, s in enumerate(seeds):
            path = run_dir / "videos" / f"seed_{s}_frame_{ckpt.frame}.mp4"
            write_mp4(path, [f[i] for f, _ in zip(frames, range(int(lens[i, 0])), strict=False)],
                      fps=fps)
            out["videos"].append(path)
    for row in envs:
        for e in row:
            e.close()
    return out
