"""Op-level profile of the trainer's jitted ``step`` program (insert, update, act).

    python benchmarks/profile_step.py --seeds 5 --width 32

Traces ``--calls`` steady-state calls with the JAX profiler and prints the XLA ops that take the
most time per call, so a slow configuration can be traced to its fusions.
"""

from __future__ import annotations

import argparse
import collections
import glob
import gzip
import json
import tempfile

import jax
import jax.numpy as jnp

from fluxrl.config import compose, resolve
from fluxrl.train.off_policy import OffPolicyProgram, transition_dict


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--algo", default="sac")
    p.add_argument("--seeds", type=int, default=5)
    p.add_argument("--width", type=int, default=32)
    p.add_argument("--calls", type=int, default=200)
    p.add_argument("--top", type=int, default=25)
    args = p.parse_args()
    cfg = resolve(compose([f"algo={args.algo}", f"algo.actor.width={args.width}",
                           f"algo.critic.width={args.width}", f"seeds={args.seeds}",
                           "env=gym/HalfCheetah-v5", "frames=1000000"]))
    ids = [cfg.seed + k for k in range(cfg.seeds)]
    program = OffPolicyProgram(cfg, ids)
    env, prog = program.env, program.programs
    state = prog.init(jnp.stack([jax.random.PRNGKey(s) for s in ids]))
    obs, action = env.reset(), env.random_actions()
    for _ in range(300):
        tr, obs = env.step(action)
        state = prog.insert(state, transition_dict(tr))
        action = env.random_actions()
    trd = transition_dict(tr)
    for i in range(50):
        state, a = prog.step(state, trd, obs, i)
    a.block_until_ready()
    out = tempfile.mkdtemp(prefix="fluxrl-profile-")
    jax.profiler.start_trace(out, create_perfetto_trace=True)
    for i in range(args.calls):
        state, a = prog.step(state, trd, obs, i)
        a.block_until_ready()
    jax.profiler.stop_trace()
    trace = json.load(gzip.open(glob.glob(f"{out}/**/*.trace.json.gz", recursive=True)[0]))
    events = trace["traceEvents"] if isinstance(trace, dict) else trace
    total, count = collections.Counter(), collections.Counter()
    for e in events:
        if e.get("ph") == "X":
            total[e["name"]] += e["dur"]
            count[e["name"]] += 1
    print(f"{'us/call':>9}  {'n/call':>6}  op")
    for name, dur in total.most_common(args.top):
        print(f"{dur / args.calls:9.1f}  {count[name] / args.calls:6.1f}  {name[:90]}")
    env.close()


if __name__ == "__main__":
    main()
