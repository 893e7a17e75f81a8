"""GenPO's update with the analytic log-determinant against the Jacobian form the authors use.

    python benchmarks/genpo_logdet.py            # writes benchmarks/results/genpo-logdet-*.md
    python benchmarks/genpo_logdet.py --quick    # 3 rounds, minibatches up to 1024 only

GenPO's flow is shears and a linear mix, so ``log|det J| = 2 N d log p`` is a constant
(:mod:`fluxrl.agents.policy_gradient.genpo`). The authors (wadx2019/genpo at 5b6711b,
``flow_rsl_rl/rsl_rl/modules/reflow/flow.py`` ``Flow.inverse(jac=True)``, called from
``algorithms/flowppo.py``) compute it in every update with ``jacrev`` of the inverse flow per
sample and its determinant, and differentiate through it. ``algo.log_det=jacobian`` does the same
here (``vmap(jacrev)`` + ``slogdet``). Both agents' jitted ``update`` (one minibatch: inverse flow,
compression sample, value, gradient, Adam) are timed on the same state and minibatch, one call of
each in turn per round, after their compile; medians of ms per update. The two updates must agree
(largest parameter difference reported). Cases: Table 4 (3 x 256 ELU, minibatch 1024 * 24 / 4 =
6144, 5 steps, time embedding 32) with an Ant-sized task (obs 60, d 8), and smaller ones.
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from throughput import matmul_gflops, versions  # noqa: E402

#: (name, width, depth, minibatch, act_dim, obs_dim, always): Table 4's case always runs; the
#: others run while their projected time fits the budget
CASES = [
    ("pointreach-test 2x64", 64, 2, 512, 2, 4, True),
    ("table4 3x256 B6144 d8", 256, 3, 6144, 8, 60, True),
    ("3x256 B1024 d8", 256, 3, 1024, 8, 60, False),
    ("3x256 B1024 d2", 256, 3, 1024, 2, 4, False),
    ("table4 3x256 B6144 d2", 256, 3, 6144, 2, 4, False),
]
BUDGET_S = 540  #: optional cases start only if their projected time fits (the run stays < 10 min)
CASE_ROUNDS_S = 60  #: rounds beyond the first 3 only while a case's rounds fit in this many seconds
SLOW_CALL_S = 10  #: when the first call after compiling takes longer, it counts as round 1


def build(width: int, depth: int, act_dim: int, obs_dim: int, log_det: str):
    """The GenPO agent at these sizes with ``algo.log_det=log_det`` and its jitted update."""
    import jax

    from fluxrl.agents.base import Shapes
    from fluxrl.agents.registry import make_agent
    from fluxrl.config import compose, resolve

    cfg = resolve(compose(["algo=genpo", "env=jax/PointReach", f"algo.actor.width={width}",
                           f"algo.critic.width={width}", f"algo.actor.depth={depth}",
                           f"algo.critic.depth={depth}", f"algo.log_det={log_det}"])).algo
    agent = make_agent(cfg, Shapes(obs_dim, act_dim))
    return agent, jax.jit(agent.update)


def run_case(width: int, depth: int, batch: int, act_dim: int, obs_dim: int, rounds: int,
             deadline: float) -> dict:
    """Compile both updates, then ``rounds`` alternating timed calls (fewer if the deadline is
    near; at least 3)."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    from fluxrl.agents.base import Rollout

    analytic, up_a = build(width, depth, act_dim, obs_dim, "analytic")
    _, up_j = build(width, depth, act_dim, obs_dim, "jacobian")
    state = analytic.init(jax.random.PRNGKey(0))
    rng = np.random.default_rng(0)
    obs = jnp.asarray(rng.normal(size=(batch, obs_dim)), jnp.float32)
    action, extras = jax.jit(analytic.act, static_argnums=3)(state, obs, jax.random.PRNGKey(1),
                                                             False)
    adv, target = (jnp.asarray(rng.normal(size=batch), jnp.float32) for _ in range(2))
    z = jnp.zeros(batch)
    mb = Rollout(obs, action, z, z, z, extras, adv, target)
    key, index = jax.random.PRNGKey(2), jnp.int32(0)
    out, compiled, compile_s, first = {}, {}, {}, {}
    for name, up in (("analytic", up_a), ("jacobian", up_j)):
        t = time.perf_counter()
        compiled[name] = up.lower(state, mb, key, index).compile()
        compile_s[name] = time.perf_counter() - t
        t = time.perf_counter()
        out[name] = jax.block_until_ready(compiled[name](state, mb, key, index))
        first[name] = time.perf_counter() - t
    per_round = first["analytic"] + first["jacobian"]
    room = min(deadline - time.perf_counter(), CASE_ROUNDS_S)  # rounds past 3 only if cheap
    rounds = max(3, min(rounds, int(room / max(per_round, 1e-3))))
    slow = per_round > SLOW_CALL_S
    times = {k: [v * 1e3] if slow else [] for k, v in first.items()}
    for _ in range(rounds - slow):
        for name in times:  # one call of each in turn
            t = time.perf_counter()
            jax.block_until_ready(compiled[name](state, mb, key, index))
            times[name].append((time.perf_counter() - t) * 1e3)
    diff = max(float(jnp.abs(a - b).max()) for a, b in zip(
        jax.tree.leaves(out["analytic"][0]), jax.tree.leaves(out["jacobian"][0]), strict=True))
    med = {k: float(np.median(v)) for k, v in times.items()}
    return {"width": width, "depth": depth, "batch": batch, "act_dim": act_dim,
            "obs_dim": obs_dim, "rounds": rounds, "ms": med, "times_ms": times,
            "compile_s": compile_s, "ratio": med["jacobian"] / med["analytic"],
            "max_param_diff": diff, "loss": {k: float(v[1]["loss"]) for k, v in out.items()},
            "first_s": per_round, "first_counted": slow,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="3 rounds, minibatches up to 1024 only")
    ap.add_argument("--rounds", type=int, default=9, help="alternating rounds per case (at most)")
    args = ap.parse_args()
    start = time.perf_counter()
    load0 = os.getloadavg()
    mm = matmul_gflops()
    cases = [c for c in CASES if c[3] <= 1024] if args.quick else CASES
    rows, skipped = {}, {}
    for name, width, depth, batch, d, o, always in cases:
        left = start + BUDGET_S - time.perf_counter()
        like = [r for r in rows.values() if r["width"] == width and r["depth"] == depth]
        if not always and like:  # project from a measured case of the same network
            r = like[-1]
            per_round = sum(r["ms"][k] / 1e3 * batch / r["batch"]
                            * (d / r["act_dim"] if k == "jacobian" else 1) for k in r["ms"])
            need = 3 * per_round + sum(r["compile_s"].values())
            if need > left:
                skipped[name] = f"projected {need:.0f} s, {left:.0f} s left"
                print(name, "skipped:", skipped[name], flush=True)
                continue
        r = run_case(width, depth, batch, d, o, 3 if args.quick else args.rounds,
                     start + BUDGET_S - 30)
        rows[name] = r
        print(name, f"analytic {r['ms']['analytic']:.1f} ms, jacobian {r['ms']['jacobian']:.1f} "
              f"ms, x{r['ratio']:.1f}, max param diff {r['max_param_diff']:.1e}", flush=True)
    v = versions()
    load1 = os.getloadavg()
    lines = [f"# GenPO: analytic log-det vs jacrev + slogdet, {v['date']}", "",
             f"{v['cpu']}, {v['cores']} cores, devices {', '.join(v['devices'])}; python "
             f"{v['python']}, jax {v['jax']}, flax {v['flax']}; float32 256^3 matmul: {mm:.1f} "
             f"GFLOP/s (same process); load average {load0[0]:.1f} at start, {load1[0]:.1f} at "
             f"end; {time.perf_counter() - start:.0f} s in all.", "",
             "Jitted `update` of one minibatch (5 flow steps, p 0.95, time embedding 32, ELU; "
             "actor and critic width x depth as listed), `algo.log_det=analytic` (the constant "
             "2 N d log p) against `algo.log_det=jacobian` (vmap(jacrev) of the inverse flow per "
             "sample + slogdet, differentiated through, as GenPO's `Flow.inverse(jac=True)`), "
             "alternating one call each per round; medians. `max param diff`: largest difference "
             "of the two updated states (the same update up to rounding). Where the first call "
             f"after compiling took over {SLOW_CALL_S} s it is counted as round 1 (marked *).", "",
             "| case | width x depth | minibatch | d | obs | rounds | analytic ms | jacobian ms | "
             "jacobian / analytic | compile s (analytic / jacobian) | max param diff | "
             "peak RSS MB (process, so far) |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, r in rows.items():
        lines.append(f"| {name} | {r['width']} x {r['depth']} | {r['batch']} | {r['act_dim']} | "
                     f"{r['obs_dim']} | {r['rounds']}{'*' if r['first_counted'] else ''} | "
                     f"{r['ms']['analytic']:.1f} | "
                     f"{r['ms']['jacobian']:.1f} | {r['ratio']:.1f} | "
                     f"{r['compile_s']['analytic']:.1f} / {r['compile_s']['jacobian']:.1f} | "
                     f"{r['max_param_diff']:.1e} | {r['peak_rss_mb']:,.0f} |")
    for name, why in skipped.items():
        lines.append(f"| {name} | skipped: {why} | | | | | | | | | | |")
    lines += ["", "Every timed call (ms):", ""]
    for name, r in rows.items():
        lines.append(f"- {name}: analytic {[round(t, 1) for t in r['times_ms']['analytic']]}, "
                     f"jacobian {[round(t, 1) for t in r['times_ms']['jacobian']]}")
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    path = Path(__file__).parent / "results" / f"genpo-logdet-{stamp}.md"
    path.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    print("wrote", path)


if __name__ == "__main__":
    main()
