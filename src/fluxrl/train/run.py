"""``train(cfg)``: a whole off-policy run with logging, evaluation, checkpoints and resume."""

from __future__ import annotations

import dataclasses
import json
import os
import platform
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import yaml

from fluxrl.agents.base import make_agent
from fluxrl.config import Config, from_dict, resolve, to_dict
from fluxrl.envs import make_env, make_vec_env
from fluxrl.errors import FluxError, TrainingDiverged
from fluxrl.logger import RunLogger
from fluxrl.train import checkpoint
from fluxrl.train.evaluation import evaluate
from fluxrl.train.off_policy import OffPolicyPrograms, TrainState, pop_metrics, transition_dict

#: Keys that may change when a run is resumed (everything else is taken from config.yaml).
RESUMABLE = {"steps", "progress", "tensorboard", "wandb", "wandb_project", "plot", "resume"}


@dataclass
class RunResult:
    """What a finished run leaves behind."""

    run_dir: Path
    steps: int  #: frames trained per seed
    eval_steps: list[int]
    eval_returns: np.ndarray  #: ``[evaluations, seeds]`` mean return per evaluation
    state: TrainState


def _check_writable(run_dir: Path) -> None:
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        probe = run_dir / ".write_test"
        probe.write_text("ok")
        probe.unlink()
    except OSError as exc:
        raise FluxError(f"cannot write to run_dir={run_dir}: {exc.strerror or exc}; "
                        "choose a writable directory with run_dir=PATH") from None


def load_run_config(run_dir: Path) -> Config:
    """The resolved config saved in a run directory, or a FluxError if none is there."""
    f = Path(run_dir) / "config.yaml"
    if not f.exists():
        raise FluxError(f"{run_dir} holds no fluxrl run (no config.yaml); pass the run_dir of an "
                        "earlier `fluxrl train`")
    return from_dict(yaml.safe_load(f.read_text()))


def prepare(cfg: Config, overrides: list[str] | None = None) -> tuple[Config, Path, bool]:
    """Resolve the config and the run directory; every user error surfaces here."""
    if cfg.resume:
        run_dir = Path(cfg.resume)
        saved = load_run_config(run_dir)
        if checkpoint.latest_step(run_dir) is None:
            raise FluxError(f"{run_dir} holds no checkpoint to resume from; start it again "
                            "without resume=")
        changed = {o.split("=", 1)[0].lstrip("+") for o in (overrides or [])} - RESUMABLE
        if changed:
            raise FluxError(f"cannot change {', '.join(sorted(changed))} when resuming; only "
                            f"{', '.join(sorted(RESUMABLE - {'resume'}))} may change")
        keep = {k: getattr(cfg, k) for k in RESUMABLE if k != "resume"
                if any(o.split("=", 1)[0] == k for o in (overrides or []))}
        cfg = dataclasses.replace(saved, **keep, resume=str(run_dir), run_dir=str(run_dir))
        cfg = resolve(cfg)
        _check_writable(run_dir)
        return cfg, run_dir, True
    cfg = resolve(cfg)
    name = f"{cfg.algo.name}-{cfg.env.replace('/', '-')}-{time.strftime('%Y%m%d-%H%M%S')}"
    run_dir = Path(cfg.run_dir or Path("runs") / name)
    if (run_dir / "config.yaml").exists():
        raise FluxError(f"run_dir={run_dir} already holds a run; continue it with "
                        f"resume={run_dir} or pick another run_dir")
    _check_writable(run_dir)
    cfg = dataclasses.replace(cfg, run_dir=str(run_dir))
    return cfg, run_dir, False


def _write_meta(run_dir: Path, cfg: Config) -> None:
    (run_dir / "config.yaml").write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))
    import flax
    import optax

    meta = {"argv": sys.argv, "python": platform.python_version(), "jax": jax.__version__,
            "flax": flax.__version__, "optax": optax.__version__,
            "devices": [str(d) for d in jax.devices()], "machine": platform.machine(),
            "cpus": os.cpu_count(), "started": time.strftime("%Y-%m-%d %H:%M:%S")}
    (run_dir / "meta.json").write_text(json.dumps(meta, indent=2))


def build(cfg: Config):
    """Environments, agent and compiled programs for a resolved config."""
    seeds = [cfg.seed + k for k in range(cfg.seeds)]
    env = make_vec_env(cfg.env, seeds, 1, cfg.action_repeat)
    agent = make_agent(cfg.algo, env.spec)
    agent_steps = cfg.steps // cfg.action_repeat
    capacity = max(min(cfg.buffer_size, agent_steps), cfg.batch_size)
    programs = OffPolicyPrograms(agent, env.spec, capacity, cfg.batch_size, cfg.updates_per_step)
    return seeds, env, programs


def _check_finite(metrics: dict[str, np.ndarray], step: int, seeds: list[int], run_dir: Path):
    bad = {k: np.asarray(v) for k, v in metrics.items() if not np.isfinite(v).all()}
    if not bad:
        return
    first = next(iter(bad.values()))
    seed = seeds[int(np.argmax(~np.isfinite(first)))]
    last = checkpoint.latest_step(run_dir)
    kept = (f"the last good checkpoint (frame {last}) is kept in {run_dir}/checkpoints"
            if last is not None else "no checkpoint had been written yet")
    raise TrainingDiverged(
        f"{', '.join(sorted(bad))} became non-finite by frame {step} (seed {seed}); {kept}; "
        "check the rewards or lower the learning rates")


def train(cfg: Config, overrides: list[str] | None = None) -> RunResult:
    """Train ``cfg.seeds`` agents together; see the module docs of ``fluxrl.train``."""
    cfg, run_dir, resuming = prepare(cfg, overrides)
    seeds, env, prog = build(cfg)
    repeat = cfg.action_repeat
    total, warmup = cfg.steps // repeat, cfg.warmup // repeat
    keys = jnp.stack([jax.random.PRNGKey(s) for s in seeds])
    state = prog.init(keys)
    eval_envs = [[make_env(cfg.env, repeat) for _ in range(cfg.eval_episodes)] for _ in seeds]

    start = 0
    if resuming:
        state, host, frame = checkpoint.restore(run_dir, state)
        start = frame // repeat
        env.set_state(host["env"])
        obs, action = host["obs"], host["action"]
    else:
        _write_meta(run_dir, cfg)
        obs = env.reset()
        action = env.random_actions() if warmup > 0 else np.asarray(prog.act_explore(state, obs, 0))
    logger = RunLogger(run_dir, seeds, cfg.tensorboard, cfg.wandb, cfg.wandb_project,
                       to_dict(cfg), resume_step=start * repeat if resuming else None)

    def every(n_frames: int, t: int) -> bool:
        return n_frames > 0 and ((t + 1) * repeat) // n_frames > (t * repeat) // n_frames

    bar = None
    if cfg.progress:
        from tqdm import tqdm

        bar = tqdm(total=total * repeat, initial=start * repeat, unit="frame", dynamic_ncols=True,
                   desc=f"{cfg.algo.name} {cfg.env} x{len(seeds)}", smoothing=0.05, mininterval=1.0)
    try:
        for t in range(start, total):
            tr, obs = env.step(action)
            if t + 1 < warmup:
                state = prog.insert(state, transition_dict(tr))
                action = env.random_actions()
            else:
                state, action_dev = prog.step(state, transition_dict(tr), obs, t)
                action = np.asarray(action_dev)
            frame = (t + 1) * repeat
            if bar is not None:
                bar.update(repeat)
            if every(cfg.log_every, t):
                env.pop_finished()  # training-episode bookkeeping is not logged; keep it bounded
                state, metrics = pop_metrics(state)
                _check_finite(metrics, frame, seeds, run_dir)
                if metrics and t + 1 >= warmup:
                    logger.train(frame, metrics)
            if every(cfg.eval_every, t) or t + 1 == total:
                rets, lens = evaluate(prog.eval_policy(state.agent), eval_envs, seeds)
                logger.eval(frame, rets, lens)
                logger.flush()
                if bar is not None:
                    bar.set_postfix(eval=f"{rets.mean():.1f}", refresh=False)
            if (cfg.checkpoint_every and every(cfg.checkpoint_every, t)) or t + 1 == total:
                # never checkpoint a state whose losses are already non-finite
                _check_finite(jax.device_get(state.msum), frame, seeds, run_dir)
                checkpoint.save(run_dir, frame, state,
                                {"env": env.get_state(), "obs": obs, "action": action})
    finally:
        if bar is not None:
            bar.close()
        logger.close()
        env.close()
        for row in eval_envs:
            for e in row:
                e.close()
    if cfg.plot:
        from fluxrl.plot import plot_runs

        plot_runs([run_dir], run_dir / "curves.png")
    all_steps = [r["step"] for r in _eval_rows(run_dir, seeds[0])]
    all_rets = np.array([[r["return_mean"] for r in _eval_rows(run_dir, s)] for s in seeds]).T
    return RunResult(run_dir, total * repeat, all_steps, all_rets, state)


def _eval_rows(run_dir: Path, seed: int) -> list[dict]:
    from fluxrl.logger import read_jsonl

    return read_jsonl(run_dir / f"seed_{seed}" / "eval.jsonl")


def evaluate_run(run_dir: Path, episodes: int = 10, video: bool = False) -> dict:
    """Evaluate a run's latest checkpoint; with ``video``, write one mp4 per seed to
    ``run_dir/videos`` (headless rendering, ``MUJOCO_GL=egl`` by default)."""
    run_dir = Path(run_dir)
    cfg = load_run_config(run_dir)
    if checkpoint.latest_step(run_dir) is None:
        raise FluxError(f"{run_dir} holds no checkpoint yet; train longer or wait for the first "
                        "checkpoint")
    if episodes <= 0:
        raise FluxError(f"--episodes must be positive, got {episodes}")
    if video:
        _check_writable(run_dir / "videos")
    cfg = resolve(cfg)
    seeds, env, prog = build(cfg)
    env.close()
    state = prog.init(jnp.stack([jax.random.PRNGKey(s) for s in seeds]))
    state, _, frame = checkpoint.restore(run_dir, state)
    envs = [[make_env(cfg.env, cfg.action_repeat, render=video and j == 0)
             for j in range(episodes)] for _ in seeds]
    frames: list | None = [] if video else None
    rets, lens = evaluate(prog.eval_policy(state.agent), envs, seeds, frames)
    out = {"frame": frame, "returns": rets, "lengths": lens, "videos": []}
    if video:
        import imageio

        fps = max(1, int(round(50 / cfg.action_repeat)))
        for i, s in enumerate(seeds):
            path = run_dir / "videos" / f"seed_{s}_frame_{frame}.mp4"
            clip = [f[i] for f, _ in zip(frames, range(int(lens[i, 0])), strict=False)]
            imageio.mimsave(path, clip, fps=fps, macro_block_size=1)
            out["videos"].append(path)
    for row in envs:
        for e in row:
            e.close()
    return out
