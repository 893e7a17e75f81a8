"""Short off-policy runs whose curves were recorded before the trainer-layer redesign (issue 9).

``python tests/golden_runs.py record`` writes ``tests/data/golden_offpolicy.json``;
``tests/test_golden.py`` reruns the same runs and asks for bit-identical curves on CPU.
Each run: 2 seeds, a few thousand frames, small networks (SDAC and DACER also with a short chain
and few candidates), so the six runs take about a minute on 2 cores.
"""

from __future__ import annotations

import json
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
#: the config keys of the budget's names (before issue 9: steps, warmup, batch_size)
KEYS = {"frames": "frames", "warmup": "off_policy.warmup_frames",
        "batch_size": "off_policy.batch_size"}
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


if __name__ == "__main__" and sys.argv[1:] == ["record"]:
    from fluxrl.config import compose
    from fluxrl.train.run import train

    data = record(train, compose, KEYS)
    DATA.write_text(json.dumps(data, indent=1) + "\n")
    print(f"wrote {DATA}")
