"""On-policy throughput: raw JAX env steps/s, then the on-policy program's env steps/s beside it.

    python benchmarks/on_policy_throughput.py            # writes benchmarks/results/on-policy-*.{json,md}
    python benchmarks/on_policy_throughput.py --quick    # fewer repeats

Raw rate: ``jit`` of a ``lax.scan`` over 100 steps of ``vmap(JaxEnv.step)`` (auto-reset
included) with fixed actions, for each task and ``num_envs``: the ceiling every trainer is
measured against. Training rate: the on-policy program's own jitted chunk (rollout, GAE,
epochs x minibatches) timed call by call after its compile; its matmul FLOPs per iteration are
counted from the jaxpr (:mod:`fluxrl.flops`) and shown as GFLOP/s beside a float32 256^3 matmul
timed in the same process. Medians throughout.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from throughput import matmul_gflops, versions  # noqa: E402

SMALL = ["env=jax/PointReach", "on_policy.num_envs=64", "on_policy.unroll_length=32",
         "algo.actor.width=64", "algo.critic.width=64", "algo.actor.depth=2", "algo.critic.depth=2"]
#: on-policy agents of the registry (``--algos`` picks among them)
ALGOS = ("ppo", "dppo", "fpo", "fpo_pp", "genpo")


def configs(algos: tuple[str, ...]) -> dict[str, tuple[str, list[str], int]]:
    """``name -> (algo, overrides, seeds)``: per agent the paper's Table 4 setting on
    jax/Pendulum (1024 envs x 24 steps, 3 x 256, 4 epochs x 4 minibatches) and a small
    PointReach one with 1, 2 and 4 vmapped seeds; PPO also at Brax's DMC preset on
    playground/CartpoleBalance (256 envs and 1 unroll per iteration: CPU-sized)."""
    out: dict[str, tuple[str, list[str], int]] = {}
    for algo in algos:
        out[f"{algo}-paper-pendulum"] = (algo, ["env=jax/Pendulum"], 1)
        for seeds in (1, 2, 4):
            out[f"{algo}-small-pointreach-{seeds}seed"] = (algo, SMALL, seeds)
    if "ppo" in algos:
        out["ppo-brax-cartpole-256envs"] = ("ppo", [
            "env=playground/CartpoleBalance", "on_policy.num_envs=256",
            "on_policy.unrolls_per_iteration=1", "on_policy.num_minibatches=8",
            "on_policy.update_epochs=4"], 1)
    return out


#: (task, num_envs, physics)
RAW = ([("jax/Pendulum", n, "jax") for n in (64, 1024)]
       + [("jax/PointReach", n, "jax") for n in (64, 1024)]
       + [("playground/CartpoleBalance", n, "jax") for n in (64, 256)]
       + [("playground/CheetahRun", 64, "jax"), ("playground/CartpoleBalance", 64, "warp")])


def raw_rate(name: str, num_envs: int, reps: int, physics: str = "jax") -> float:
    """Median env steps/s of 100 vmapped steps in one jitted scan."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    from fluxrl.envs import make_jax_env

    env = make_jax_env(name, physics)
    state = jax.vmap(env.reset)(jax.random.split(jax.random.PRNGKey(0), num_envs))
    action = jnp.full((num_envs, env.act_dim), 0.3)

    @jax.jit
    def run(state):
        def body(s, _):
            s, out = jax.vmap(env.step)(s, action)
            return s, out.reward.sum()
        return jax.lax.scan(body, state, None, length=100)

    jax.block_until_ready(run(state))
    ts = []
    for _ in range(reps):
        t = time.perf_counter()
        state, r = run(state)
        jax.block_until_ready(r)
        ts.append(time.perf_counter() - t)
    return 100 * num_envs / float(np.median(ts))


def train_rate(algo: str, overrides: list[str], seeds: int, reps: int) -> dict:
    """The program's chunk: compile seconds, median ms per iteration, env steps/s, FLOPs."""
    import jax
    import numpy as np

    from fluxrl.config import compose, resolve
    from fluxrl.flops import matmul_flops
    from fluxrl.train.on_policy import OnPolicyProgram

    cfg = resolve(compose([f"algo={algo}", *overrides]))
    prog = OnPolicyProgram(cfg, list(range(seeds)))
    state = prog.init()
    t = time.perf_counter()
    state = prog.run_chunk(state, 0)
    jax.block_until_ready(state)
    compile_s = time.perf_counter() - t
    ts = []
    for i in range(reps):
        t = time.perf_counter()
        state = prog.run_chunk(state, i + 1)
        jax.block_until_ready(state)
        ts.append(time.perf_counter() - t)
    ms = float(np.median(ts)) * 1e3
    flops = matmul_flops(prog.programs.chunk, state) / cfg.on_policy.iterations_per_chunk
    steps = prog.programs.steps_per_iteration * seeds
    return {"algo": algo, "seeds": seeds, "num_envs": cfg.on_policy.num_envs, "env": cfg.env,
            "steps_per_iteration": steps, "compile_s": compile_s, "ms_per_iteration": ms,
            "env_steps_per_s": steps / (ms / 1e3), "matmul_flops_per_iteration": flops,
            "gflops": flops / (ms / 1e3) / 1e9}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer repeats")
    ap.add_argument("--only", nargs="*", help="configuration names")
    ap.add_argument("--algos", nargs="*", default=list(ALGOS), help="on-policy algorithms")
    ap.add_argument("--no-raw", action="store_true", help="skip the raw env rates of playground/")
    args = ap.parse_args()
    reps = 5 if args.quick else 15
    mm = matmul_gflops()
    raw, failed = {}, {}
    for n, k, p in RAW:
        if args.no_raw and n.startswith("playground"):
            continue
        key = f"{n}@{k}" + ("" if p == "jax" else f"/{p}")
        try:
            raw[key] = raw_rate(n, k, max(3, reps // 3) if n.startswith("playground") else reps, p)
        except Exception as exc:  # noqa: BLE001 - a physics backend that cannot run here is a result
            failed[key] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
            print(key, "failed:", failed[key], flush=True)
            continue
        print(key, f"{raw[key]:,.0f} steps/s", flush=True)
    rows = {}
    for name, (algo, ov, seeds) in configs(tuple(args.algos)).items():
        if (args.only and name not in args.only) or (args.no_raw and "playground" in str(ov)):
            continue
        r = train_rate(algo, ov, seeds, max(3, reps // 3) if "paper" in name else reps)
        r["raw_env_steps_per_s"] = raw[f"{r['env']}@{r['num_envs']}"]
        r["fraction_of_raw"] = r["env_steps_per_s"] / seeds / r["raw_env_steps_per_s"]
        r["matmul_fraction"] = r["gflops"] / mm
        rows[name] = r
        print(name, json.dumps({k: round(v, 3) if isinstance(v, float) else v for k, v in r.items()}))
    out = {"versions": versions(), "matmul_gflops": mm, "raw": raw, "raw_failed": failed,
           "train": rows}
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    res = Path(__file__).parent / "results"
    (res / f"on-policy-{stamp}.json").write_text(json.dumps(out, indent=1))
    lines = [f"# On-policy throughput, {out['versions']['date']}", "",
             f"{out['versions']['cpu']}, {out['versions']['cores']} cores, jax "
             f"{out['versions']['jax']}; float32 256^3 matmul: {mm:.1f} GFLOP/s (same process)", "",
             "| task @ num_envs | raw env steps/s (jit(vmap(step)), 100-step scan) |", "|---|---|"]
    lines += [f"| {k} | {v:,.0f} |" for k, v in raw.items()]
    lines += [f"| {k} | failed: {v} |" for k, v in failed.items()]
    lines += ["", "(`/warp`: Playground's MuJoCo Warp physics; the others MJX in JAX or fluxrl's own "
              "JAX tasks)"]
    lines += ["", "| config | seeds | steps/iteration | compile s | ms/iteration | env steps/s | "
              "per seed / raw | matmul FLOPs/iteration | GFLOP/s | of matmul |",
              "|---|---|---|---|---|---|---|---|---|---|"]
    for name, r in rows.items():
        lines.append(f"| {name} | {r['seeds']} | {r['steps_per_iteration']} | {r['compile_s']:.1f} | "
                     f"{r['ms_per_iteration']:.1f} | {r['env_steps_per_s']:,.0f} | "
                     f"{r['fraction_of_raw']:.0%} | {r['matmul_flops_per_iteration'] / 1e9:.2f}G | "
                     f"{r['gflops']:.1f} | {r['matmul_fraction']:.0%} |")
    (res / f"on-policy-{stamp}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
