"""Throughput benchmark: ms per update, end-to-end env steps/s, compile time, memory, FLOPs.

Each configuration runs in its own subprocess (clean compile cache, honest peak memory). Compute
speed is reported as achieved GFLOP/s next to a dense float32 256x256x256 matmul timed in the same
process, because absolute times on shared machines swing by 2x with load. The FLOPs are the
program's matmul FLOPs counted from its jaxpr with every ``scan`` times its length
(:mod:`fluxrl.flops`); XLA's ``cost_analysis()`` is printed next to them, but it counts a loop body
once, so it under-reports a 20-step sampler about 20-fold.

    python benchmarks/throughput.py                 # all configurations, writes benchmarks/results/
    python benchmarks/throughput.py --only sac-2x32 --iters 500

The timed program is the trainer's own jitted ``step`` (insert the transition into the device replay
buffer, one gradient update, act on the next observation); the end-to-end loop is the trainer's loop
body (host env step, the jitted step, fetch the action). Single-seed configurations also report
acting latency: ms for one training-time action and one evaluation action (best-of-N included) on
a single state, and seconds for one evaluation round (10 episodes in lockstep).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

#: name -> (overrides, seeds, most iterations, cond rates). Paper networks are 2x256 for Gym
#: (protocol.md section 3); the generative agents run at their paper defaults (their config docs
#: cite them). The slow ones are timed over fewer iterations: the median of 20 updates of a 1 s
#: program is stable. Cond rates say how often each periodic branch runs (TD3 and DACER: actor
#: every 2nd update, DACER's temperature every 10K, DIME: actor every 3rd), so that the FLOPs per
#: update are an average (:func:`fluxrl.flops.matmul_flops`); those rows' GFLOP/s use the mean
#: update time.
CONFIGS = {
    "sac-2x256": (["algo=sac"], 1, None, None),
    "sac-2x256-5seeds": (["algo=sac"], 5, None, None),
    "td3-2x256": (["algo=td3"], 1, None, [1 / 2]),
    "sac-2x32": (["algo=sac", "algo.actor.width=32", "algo.critic.width=32"], 1, None, None),
    "sac-2x32-5seeds": (["algo=sac", "algo.actor.width=32", "algo.critic.width=32"], 5, None,
                        None),
    "qsm": (["algo=qsm"], 1, 200, None),
    "idem": (["algo=idem"], 1, 20, None),
    "dacer": (["algo=dacer"], 1, 200, [1 / 2, 1 / 10_000]),
    "dime": (["algo=dime"], 1, 60, [1 / 3]),
    "sdac": (["algo=sdac"], 1, 30, None),
    "qvpo": (["algo=qvpo"], 1, 30, None),
    "dpmd": (["algo=dpmd"], 1, 20, None),
}
ENV = "gym/HalfCheetah-v5"


def matmul_gflops(n: int = 256, reps: int = 200) -> float:
    """Median GFLOP/s of a jitted float32 n x n x n matmul."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    a = jnp.asarray(np.random.default_rng(0).standard_normal((n, n)), jnp.float32)
    f = jax.jit(lambda x, y: x @ y)
    f(a, a).block_until_ready()
    ts = []
    for _ in range(reps):
        t = time.perf_counter()
        f(a, a).block_until_ready()
        ts.append(time.perf_counter() - t)
    return 2 * n**3 / float(np.median(ts)) / 1e9


def run_one(name: str, iters: int) -> dict:
    """Measure one configuration in this process."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    from fluxrl.config import compose, resolve
    from fluxrl.flops import matmul_flops
    from fluxrl.train.off_policy import OffPolicyProgram, transition_dict

    overrides, seeds, most, rates = CONFIGS[name]
    iters = min(iters, most or iters)
    cfg = resolve(compose(overrides + [f"env={ENV}", f"seeds={seeds}", "off_policy.batch_size=256",
                                       "frames=1000000"]))
    ids = [cfg.seed + k for k in range(cfg.seeds)]
    program = OffPolicyProgram(cfg, ids)  # the trainer's program; time its jitted step
    env, prog = program.env, program.programs
    state = prog.init(jnp.stack([jax.random.PRNGKey(s) for s in ids]))
    obs = env.reset()
    action = env.random_actions()
    for _ in range(300):  # something to sample from
        tr, obs = env.step(action)
        state = prog.insert(state, transition_dict(tr))
        action = env.random_actions()
    tr, obs = env.step(action)
    trd = transition_dict(tr)

    t = time.perf_counter()
    compiled = prog.step.lower(state, trd, obs, 0).compile()
    compile_s = time.perf_counter() - t
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, list) else cost
    xla_flops = float(cost.get("flops", float("nan"))) if cost else float("nan")
    # XLA counts a scan's body once; the jaxpr count multiplies it by the trip count
    flops = matmul_flops(prog.step, state, trd, obs, 1, cond_rates=rates)
    state, a = prog.step(state, trd, obs, 0)
    a.block_until_ready()

    ts = []
    for i in range(1, iters + 1):  # update 0 runs every periodic branch at once (DACER's alpha)
        t = time.perf_counter()
        state, a = prog.step(state, trd, obs, i)
        a.block_until_ready()
        ts.append(time.perf_counter() - t)
    step_ms = float(np.median(ts)) * 1e3
    mean_ms = float(np.mean(ts)) * 1e3  # DACER alternates critic-only and actor steps

    # end to end: the trainer's loop body, one update per env step
    action = np.asarray(a)
    per_iter = []
    for rep in range(5):
        t = time.perf_counter()
        for i in range(iters // 5):
            tr, obs = env.step(action)
            state, a = prog.step(state, transition_dict(tr), obs, 1 + rep * iters + i)
            action = np.asarray(a)
            env.pop_finished()
        per_iter.append((time.perf_counter() - t) / (iters // 5))
    e2e_ms = float(np.median(per_iter)) * 1e3
    latency = acting_latency(cfg, ids, prog, state) if seeds == 1 else {}
    mm = matmul_gflops()
    # aggregate over vmapped seeds; an average FLOP count goes with the mean time
    gflops = flops / ((mean_ms if rates else step_ms) / 1e3) / 1e9
    env.close()
    return {
        "name": name, "env": ENV, "seeds": seeds, "batch": 256,
        "net": f"{cfg.algo.actor.depth}x{cfg.algo.actor.width}",
        "update_ms": step_ms, "update_ms_mean": mean_ms, "iters": iters, "compile_s": compile_s, "flops_per_update": flops / seeds,
        "xla_flops_per_update": xla_flops / seeds,
        "gflops": gflops, "matmul_gflops": mm, "matmul_fraction": gflops / mm,
        "e2e_ms_per_step": e2e_ms, "env_steps_per_s": seeds * 1e3 / e2e_ms,
        "outside_update_ms": e2e_ms - step_ms,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        **latency,
    }


def acting_latency(cfg, ids: list[int], prog, state, calls: int = 200) -> dict:
    """Milliseconds to act on one state (training-time action; evaluation action, best-of-N
    included), and seconds for one whole evaluation round (``cfg.eval_episodes`` episodes in
    lockstep through the trainer's batched evaluation policy)."""
    import jax.numpy as jnp
    import numpy as np

    from fluxrl.envs import make_env
    from fluxrl.train.evaluation import evaluate

    obs = jnp.zeros((len(ids), 1, prog.spec.obs_dim), jnp.float32)
    policy = prog.eval_policy(state.agent)
    out = {}
    for key, fn in (("act_ms_b1", lambda: prog.act_explore(state, obs, 0)),
                    ("eval_act_ms_b1", lambda: policy(obs))):
        fn().block_until_ready()
        ts = []
        for _ in range(calls):
            t = time.perf_counter()
            fn().block_until_ready()
            ts.append(time.perf_counter() - t)
        out[key] = float(np.median(ts)) * 1e3
    envs = [[make_env(cfg.env, cfg.action_repeat) for _ in range(cfg.eval_episodes)] for _ in ids]
    policy(jnp.zeros((len(ids), cfg.eval_episodes, prog.spec.obs_dim))).block_until_ready()  # compile
    t = time.perf_counter()
    _, lengths = evaluate(policy, envs, ids)
    out["eval_round_s"] = time.perf_counter() - t
    out["eval_round_frames"] = int(lengths.sum()) * cfg.action_repeat
    for row in envs:
        for e in row:
            e.close()
    return out


def versions() -> dict:
    """Machine and library versions for the record."""
    import flax
    import jax
    import mujoco

    cpu = "?"
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo")
                   if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {"python": platform.python_version(), "jax": jax.__version__, "flax": flax.__version__,
            "mujoco": mujoco.__version__, "cpu": cpu, "cores": os.cpu_count(),
            "devices": [str(d) for d in jax.devices()],
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}


def table(rows: list[dict]) -> str:
    """Markdown table of results."""
    head = ("| config | seeds | ms/update | mean ms/update | matmul FLOPs/update | XLA FLOPs/update | GFLOP/s | matmul GFLOP/s | fraction | "
            "compile s | env steps/s (e2e) | outside update ms/step | act ms (batch 1) | "
            "eval act ms (batch 1) | eval round s | peak RSS MB |")
    lines = [head, "|" + "---|" * 16]
    for r in rows:
        lat = (f"{r['act_ms_b1']:.2f} | {r['eval_act_ms_b1']:.2f} | {r['eval_round_s']:.1f}"
               if "act_ms_b1" in r else "- | - | -")
        lines.append(
            f"| {r['name']} | {r['seeds']} | {r['update_ms']:.2f} | {r.get('update_ms_mean', float('nan')):.2f} "
            f"| {r['flops_per_update'] / 1e6:.0f}M "
            f"| {r['xla_flops_per_update'] / 1e6:.0f}M | {r['gflops']:.1f} | {r['matmul_gflops']:.1f} | {r['matmul_fraction']:.0%} | "
            f"{r['compile_s']:.2f} | {r['env_steps_per_s']:.0f} | {r['outside_update_ms']:.2f} | "
            f"{lat} | {r['peak_rss_mb']:.0f} |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--only", nargs="*", default=list(CONFIGS), choices=list(CONFIGS))
    p.add_argument("--iters", type=int, default=1000)
    p.add_argument("--repeats", type=int, default=3, help="subprocess runs per config (median)")
    p.add_argument("--one", help=argparse.SUPPRESS)
    p.add_argument("--out", default=str(Path(__file__).parent / "results"))
    args = p.parse_args()
    if args.one:
        print(json.dumps(run_one(args.one, args.iters)))
        return
    rows = []
    for name in args.only:
        runs = []
        for _ in range(args.repeats):
            out = subprocess.run([sys.executable, __file__, "--one", name, "--iters",
                                  str(args.iters)], capture_output=True, text=True, check=True)
            runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
        # median run by update time; all repeats are kept in the JSON record
        runs.sort(key=lambda r: r["update_ms"])
        row = dict(runs[len(runs) // 2])
        row["repeats"] = runs
        rows.append(row)
        print(table([row]).splitlines()[-1], flush=True)
    record = {"versions": versions(), "iters": args.iters, "results": rows}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    (out / f"throughput-{stamp}.json").write_text(json.dumps(record, indent=2))
    md = (f"# Throughput, {record['versions']['date']}\n\n"
          f"{record['versions']}\n\n{ENV}, batch 256, one update per env step, median of "
          f"{args.repeats} processes x {args.iters} iterations (the slow configurations fewer: "
          f"see CONFIGS and each row's iters in the JSON).\n\n{table(rows)}\n")
    (out / f"throughput-{stamp}.md").write_text(md)
    print(table(rows))


if __name__ == "__main__":
    main()
