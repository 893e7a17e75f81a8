"""fluxrl's PPO beside Brax's (``brax.training.agents.ppo.train``, installed with Playground) on the
same Playground task at the same settings, run alternately, back to back.

    python benchmarks/brax_ppo_compare.py                  # 2 rounds, CartpoleBalance, 256 envs
    python benchmarks/brax_ppo_compare.py --rounds 3 --iterations 20

Settings on both sides: Playground's Brax DMC preset (reward scaling 10, discount 0.995, lr 1e-3,
entropy 1e-2, clip 0.3, GAE 0.95, normalised observations, policy 4 x 32 and value 5 x 256
swish, no gradient clipping) at a CPU size: ``num_envs`` envs x 30 steps, one unroll per
iteration, 8 minibatches, 4 epochs (Brax: ``batch_size = num_envs / 8``). Speed: env steps/s of
training only, after the compile (Brax's ``training/sps`` of its last training epoch; fluxrl's
chunks of ``--iterations`` iterations timed call by call). Learning: the last evaluation return
of each side (Brax: ``eval/episode_reward`` over 16 envs; fluxrl: 16 episodes).

Known differences (see ``fluxrl.agents.baselines.ppo``): fluxrl computes GAE once per rollout
with the acting value network (Brax: in every minibatch with the current one), draws minibatches
over single steps (Brax: over whole unrolls), bootstraps a time-out from its last observation
(Brax drops the step), restarts each episode from a fresh random state (Playground's Brax wrapper:
from the first state drawn), and initialises layers with Flax's default (Brax: lecun uniform).

Brax 0.14.2 (the version Playground 0.2.0 brings) calls ``jax.device_put_replicated``, removed in
jax 0.10: the script puts back the replacement JAX's migration guide gives before calling it.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from throughput import matmul_gflops, versions  # noqa: E402


def run_fluxrl(task: str, num_envs: int, iterations: int, chunks: int, seed: int) -> dict:
    """Train ``chunks`` chunks of ``iterations`` iterations; time every chunk after the first."""
    import jax
    import numpy as np

    from fluxrl.config import compose, resolve
    from fluxrl.train.on_policy import OnPolicyProgram

    cfg = resolve(compose([
        "algo=ppo", f"env=playground/{task}", f"on_policy.num_envs={num_envs}",
        "on_policy.unrolls_per_iteration=1", "on_policy.num_minibatches=8",
        "on_policy.update_epochs=4", f"on_policy.iterations_per_chunk={iterations}",
        "eval_episodes=16"]))
    prog = OnPolicyProgram(cfg, [seed])
    state = prog.init()
    t = time.perf_counter()
    state = jax.block_until_ready(prog.run_chunk(state, 0))
    compile_s = time.perf_counter() - t
    times = []
    for i in range(1, chunks):
        t = time.perf_counter()
        state = jax.block_until_ready(prog.run_chunk(state, i))
        times.append(time.perf_counter() - t)
    rets, _ = prog.evaluate(state)
    steps = prog.frames_per_chunk
    return {"side": "fluxrl", "env_steps": steps * chunks, "first_chunk_s": compile_s,
            "env_steps_per_s": steps / float(np.median(times)), "eval_return": float(rets.mean())}


def _shim_device_put_replicated() -> None:
    """Brax 0.14.2 calls ``jax.device_put_replicated``, which jax 0.10 removed (its migration
    guide's replacement: stack one copy per device and shard the stack over the devices)."""
    import jax
    import jax.numpy as jnp
    from jax.sharding import Mesh, NamedSharding, PartitionSpec

    try:
        jax.device_put_replicated  # noqa: B018
        return
    except AttributeError:
        pass

    def device_put_replicated(x, devices):
        sharding = NamedSharding(Mesh(list(devices), ("d",)), PartitionSpec("d"))
        return jax.tree.map(lambda a: jax.device_put(jnp.stack([a] * len(devices)), sharding), x)

    jax.device_put_replicated = device_put_replicated


def run_brax(task: str, num_envs: int, iterations: int, chunks: int, seed: int) -> dict:
    """Brax PPO with ``chunks`` training epochs of ``iterations`` training steps each."""
    _shim_device_put_replicated()
    from brax.training.agents.ppo import networks as ppo_networks
    from brax.training.agents.ppo import train as ppo
    from mujoco_playground import dm_control_suite, wrapper

    cfg = dm_control_suite.get_default_config(task)
    cfg.impl = "jax"
    env = dm_control_suite.load(task, config=cfg)
    per_iteration = num_envs * 30
    records = []
    t0 = time.perf_counter()

    def progress(step: int, metrics: dict) -> None:
        records.append({"step": step, "t": time.perf_counter() - t0,
                        "sps": float(metrics.get("training/sps", float("nan"))),
                        "eval": float(metrics.get("eval/episode_reward", float("nan")))})

    ppo.train(environment=env, wrap_env_fn=wrapper.wrap_for_brax_training,
              num_timesteps=chunks * iterations * per_iteration, num_evals=chunks + 1,
              episode_length=int(cfg.episode_length), action_repeat=1, num_envs=num_envs,
              learning_rate=1e-3, entropy_cost=1e-2, discounting=0.995, unroll_length=30,
              batch_size=num_envs // 8, num_minibatches=8, num_updates_per_batch=4,
              normalize_observations=True, reward_scaling=10.0, clipping_epsilon=0.3,
              gae_lambda=0.95, num_eval_envs=16, seed=seed,
              network_factory=ppo_networks.make_ppo_networks, progress_fn=progress)
    train_rows = [r for r in records if r["step"] > 0]
    return {"side": "brax", "env_steps": records[-1]["step"],
            "env_steps_per_s": train_rows[-1]["sps"], "eval_return": records[-1]["eval"],
            "first_epoch_s": train_rows[0]["t"] - records[0]["t"] if len(records) > 1 else None}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--task", default="CartpoleBalance")
    ap.add_argument("--num-envs", type=int, default=256)
    ap.add_argument("--iterations", type=int, default=10, help="iterations per timed chunk / epoch")
    ap.add_argument("--chunks", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()
    import numpy as np

    rows = []
    for r in range(args.rounds):
        for side in (run_fluxrl, run_brax):
            row = side(args.task, args.num_envs, args.iterations, args.chunks, seed=r)
            row["round"] = r
            rows.append(row)
            print(json.dumps(row), flush=True)
    mm = matmul_gflops()
    med = {s: float(np.median([x["env_steps_per_s"] for x in rows if x["side"] == s]))
           for s in ("fluxrl", "brax")}
    out = {"versions": versions(), "args": vars(args), "matmul_gflops": mm, "rows": rows,
           "median_env_steps_per_s": med}
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    res = Path(__file__).parent / "results"
    (res / f"brax-ppo-{stamp}.json").write_text(json.dumps(out, indent=1))
    lines = [f"# fluxrl PPO vs Brax PPO, playground/{args.task}, {out['versions']['date']}", "",
             f"{out['versions']['cpu']}, {out['versions']['cores']} cores, jax "
             f"{out['versions']['jax']}; matmul 256^3: {mm:.1f} GFLOP/s; {args.num_envs} envs x 30 "
             f"steps per iteration, 8 minibatches, 4 epochs, {args.chunks} x {args.iterations} "
             "iterations per run, sides alternated", "",
             "| round | side | env steps | training env steps/s | last eval return |",
             "|---|---|---|---|---|"]
    lines += [f"| {x['round']} | {x['side']} | {x['env_steps']} | {x['env_steps_per_s']:,.0f} | "
              f"{x['eval_return']:.1f} |" for x in rows]
    lines += ["", f"Median training env steps/s: fluxrl {med['fluxrl']:,.0f}, Brax "
              f"{med['brax']:,.0f} (fluxrl / Brax = {med['fluxrl'] / med['brax']:.2f})."]
    (res / f"brax-ppo-{stamp}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
