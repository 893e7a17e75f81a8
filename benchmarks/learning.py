"""Recorded learning runs: SAC and TD3 on Gym-Locomotion tasks, 3 seeds, paper settings.

    python benchmarks/learning.py run --steps 100000          # trains into benchmarks/runs/
    python benchmarks/learning.py report                      # docs/results.md + curves

``run`` starts the four runs as concurrent processes (the machine's cores are shared between them)
and ``report`` copies each run's config and JSONL logs to ``benchmarks/results/learning/`` (so the
numbers in the docs can be re-derived) and writes the table and the curves.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RUNS = ROOT / "benchmarks" / "runs"
RECORD = ROOT / "benchmarks" / "results" / "learning"
ALGOS = ["sac", "td3"]
ENVS = ["gym/Hopper-v5", "gym/HalfCheetah-v5"]


def name(algo: str, env: str) -> str:
    return f"{algo}-{env.split('/')[1]}"


def run(args: argparse.Namespace) -> None:
    procs = []
    for env in args.envs:
        for algo in args.algos:
            run_dir = RUNS / name(algo, env)
            ov = [f"algo={algo}", f"env={env}", "seeds=3", f"steps={args.steps}",
                  f"run_dir={run_dir}", "progress=false", "checkpoint_every=25000"]
            if (run_dir / "config.yaml").exists():
                ov = [f"resume={run_dir}", f"steps={args.steps}", "progress=false"]
            log = open(RUNS / f"{name(algo, env)}.log", "a")  # noqa: SIM115
            procs.append(subprocess.Popen([sys.executable, "-m", "fluxrl", "train", *ov],
                                          stdout=log, stderr=subprocess.STDOUT))
    for p in procs:
        p.wait()


def _rows(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()]


def report(args: argparse.Namespace) -> None:
    sys.path.insert(0, str(ROOT / "src"))
    from fluxrl.plot import plot_runs

    RECORD.mkdir(parents=True, exist_ok=True)
    lines = ["| task | algo | frames | final return (mean +- std over seeds) | per seed | "
             "best eval (mean over seeds) |", "|---|---|---|---|---|---|"]
    for env in ENVS:
        dirs = []
        for algo in ALGOS:
            src = RUNS / name(algo, env)
            if not (src / "config.yaml").exists():
                continue
            dst = RECORD / name(algo, env)
            dst.mkdir(parents=True, exist_ok=True)
            shutil.copy(src / "config.yaml", dst / "config.yaml")
            shutil.copy(src / "meta.json", dst / "meta.json")
            for sd in sorted(src.glob("seed_*")):
                (dst / sd.name).mkdir(exist_ok=True)
                for f in ("eval.jsonl", "train.jsonl"):
                    shutil.copy(sd / f, dst / sd.name / f)
            evals = [_rows(p) for p in sorted(dst.glob("seed_*/eval.jsonl"))]
            n = min(len(e) for e in evals)
            rets = np.array([[r["return_mean"] for r in e[:n]] for e in evals])
            final = rets[:, -1]
            lines.append(f"| {env} | {algo} | {evals[0][n - 1]['step']} | {final.mean():.0f} +- "
                         f"{final.std():.0f} | {', '.join(f'{x:.0f}' for x in final)} | "
                         f"{rets.mean(0).max():.0f} |")
            dirs.append(dst)
        if dirs:
            plot_runs(dirs, ROOT / "docs" / "img" / f"learning-{env.split('/')[1]}.png")
    table = "\n".join(lines)
    print(table)
    (RECORD / "table.md").write_text(table + "\n")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run")
    r.add_argument("--steps", type=int, default=100_000)
    r.add_argument("--algos", nargs="*", default=ALGOS)
    r.add_argument("--envs", nargs="*", default=ENVS)
    r.set_defaults(func=run)
    sub.add_parser("report").set_defaults(func=report)
    args = p.parse_args()
    args.func(args)


if __name__ == "__main__":
    main()
