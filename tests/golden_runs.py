"""Short off-policy runs whose curves were recorded before the trainer-layer redesign (issue 9).

``tests/test_golden.py`` reruns them and asks for curves bit-identical to the record made on the
same machine. Bit-identity holds per machine only: XLA's CPU code (vector width, fused
multiply-adds, threads) changes float rounding, and 2000 frames of RL turn rounding into different
episodes, so a record from another CPU says nothing. ``python tests/golden_runs.py record 32f04c2``
runs the runs at the last commit before the redesign (a git worktree) and adds this machine's
record to ``tests/data/golden_offpolicy.json``.
Each run: 2 seeds, a few thousand frames, small networks (SDAC and DACER also with a short chain
and few candidates), so the six runs take about a minute on 2 cores.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

DATA = Path(__file__).parent / "data" / "golden_offpolicy.json"
COMMON = ["seeds=2", "progress=false", "tensorboard=false", "plot=false", "eval_episodes=2",
          "checkpoint_every=0"]
SMALL_NETS = ["algo.actor.width=32", "algo.critic.width=32"]
SMALL_CHAIN = ["algo.actor.width=32", "algo.critic.width=32", "algo.time_dim=8",
               "algo.obs_encoder_width=8", "algo.diffusion_steps=3"]
#: name -> overrides; ``<key>`` is a trainer key whose name ``overrides`` fills in
RUNS: dict[str, list[str]] = {
    "sac-pendulum": ["algo=sac", "env=gym/Pendulum-v1", *SMALL_NETS],
    "td3-pendulum": ["algo=td3", "env=gym/Pendulum-v1", *SMALL_NETS],
    "sac-cartpole": ["algo=sac", "env=dmc/cartpole-balance", *SMALL_NETS, "<batch_size>=128"],
    "td3-cartpole": ["algo=td3", "env=dmc/cartpole-balance", *SMALL_NETS, "<batch_size>=128"],
    "sdac-invpend": ["algo=sdac", "env=gym/InvertedPendulum-v5", *SMALL_CHAIN,
                     "algo.num_reverse_samples=16"],
    "dacer-invpend": ["algo=dacer", "env=gym/InvertedPendulum-v5", *SMALL_CHAIN,
                      "algo.entropy_samples=16", "algo.alpha_every=200"],
}
#: the config keys of the budget's names
KEYS = {"frames": "frames", "warmup": "off_policy.warmup_frames",
        "batch_size": "off_policy.batch_size"}
#: the same keys before issue 9
OLD_KEYS = {"frames": "steps", "warmup": "warmup", "batch_size": "batch_size"}
#: CPU features that change XLA's generated code
ISA = ("sse4_2", "avx", "avx2", "fma", "avx512f", "avx512bw", "avx512vl", "avx512_bf16", "amx_bf16",
       "asimd", "sve")
#: frames, warm-up frames, evaluation and logging cadence (frames)
BUDGET = {"frames": 2000, "warmup": 600, "eval_every": 500, "log_every": 250}


def overrides(name: str, run_dir: Path, keys: dict[str, str] = KEYS) -> list[str]:
    """The overrides of run ``name``; ``keys`` maps the budget's names to the config's keys."""
    budget = [f"<{k}>={v}" for k, v in BUDGET.items()]
    out = []
    for ov in RUNS[name] + COMMON + budget:
        if ov.startswith("<"):
            key, value = ov[1:].split(">=")
            ov = f"{keys.get(key, key)}={value}"
        out.append(ov)
    return out + [f"run_dir={run_dir}"]


def curves(run_dir: Path, seeds: int = 2, first_seed: int = 0) -> dict:
    """Evaluation returns and training metrics of every seed, as recorded in the run's JSONL."""
    out = {}
    for s in range(first_seed, first_seed + seeds):
        d = Path(run_dir) / f"seed_{s}"
        out[str(s)] = {kind: [_frame_first(json.loads(x))
                              for x in (d / f"{kind}.jsonl").read_text().splitlines()]
                       for kind in ("eval", "train")}
    return out


def _frame_first(row: dict) -> dict:
    """Rows written before issue 9 name the frame column ``step``; compare them as ``frame``."""
    return {"frame": row.pop("step"), **row} if "step" in row else row


def record(train, compose, keys: dict[str, str]) -> dict:
    """Run every golden run with ``train(compose(overrides), overrides)``; return their curves."""
    result = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in RUNS:
            ov = overrides(name, Path(tmp) / name, keys)
            train(compose(ov), ov)
            result[name] = curves(Path(tmp) / name)
    return result


def fingerprint() -> dict:
    """What decides float rounding of a run on this machine: CPU model and vector features, core
    count, jaxlib version and backend."""
    import jax
    import jaxlib

    model, flags = platform.processor(), set()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name":
                model = value.strip()
            elif key.strip() in ("flags", "Features"):
                flags = set(value.split())
    return {"cpu": model, "isa": sorted(flags.intersection(ISA)), "cores": os.cpu_count(),
            "machine": platform.machine(), "jaxlib": jaxlib.__version__,
            "backend": jax.default_backend()}


def load() -> list[dict]:
    """The records: ``[{"fingerprint", "commit", "runs": {name: curves}}]``."""
    return json.loads(DATA.read_text())["records"]


def record_for(fp: dict) -> dict | None:
    """The runs recorded on a machine with fingerprint ``fp``, or None."""
    return next((r["runs"] for r in load() if r["fingerprint"] == fp), None)


def record_at(commit: str) -> None:
    """Run the golden runs with the package as it was at ``commit`` and add (or replace) this
    machine's record in DATA."""
    repo = Path(__file__).resolve().parents[1]
    with tempfile.TemporaryDirectory() as tmp:
        tree, out = Path(tmp) / "tree", Path(tmp) / "runs.json"
        subprocess.run(["git", "-C", str(repo), "worktree", "add", "--detach", str(tree), commit],
                       check=True)
        try:
            keys = "old" if not (tree / "src/fluxrl/train/harness.py").exists() else "new"
            env = {**os.environ, "PYTHONPATH": str(tree / "src")}
            subprocess.run([sys.executable, __file__, "_record", str(out), keys], check=True, env=env)
            runs = json.loads(out.read_text())
        finally:
            subprocess.run(["git", "-C", str(repo), "worktree", "remove", "--force", str(tree)],
                           check=True)
    fp = fingerprint()
    records = [r for r in load() if r["fingerprint"] != fp]
    records.append({"fingerprint": fp, "commit": commit, "runs": runs})
    DATA.write_text(json.dumps({"records": records}, indent=1) + "\n")
    print(f"added the record of {fp['cpu']} at {commit} to {DATA}")


if __name__ == "__main__":
    if sys.argv[1:2] == ["record"] and len(sys.argv) == 3:
        record_at(sys.argv[2])
    elif sys.argv[1:2] == ["_record"]:
        import fluxrl
        from fluxrl.config import compose
        from fluxrl.train.run import train

        print(f"recording with {fluxrl.__file__}")
        runs = record(train, compose, OLD_KEYS if sys.argv[3] == "old" else KEYS)
        Path(sys.argv[2]).write_text(json.dumps(runs))
    else:
        sys.exit("usage: python tests/golden_runs.py record COMMIT")
