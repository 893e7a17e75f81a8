"""Recorded learning runs, 3 seeds each, in two suites.

``baselines`` (issue 2): SAC and TD3 on Gym-Locomotion at paper settings, 100K frames.
``generative`` (issue 3): every off-policy algorithm and SAC on two Gym tasks and one DMC task with
the reduced settings of :data:`REDUCED` (stated in docs/results.md), 10K frames; the per-task
values the paper states (QVPO's behaviour samples on Hopper, SDAC's DMC temperature) come from
:mod:`fluxrl.task_defaults`.
``reference`` (issue 8): QSM, DACER and SDAC on Hopper-v5 for 30K frames with the settings of
:data:`REFERENCE_CHECK`, the fluxrl side of the side-by-side check against flow-rl
(``compare`` overlays the two; benchmarks/results/reference/README.md has flow-rl's side).

    python benchmarks/learning.py run --suite generative --jobs 2   # trains into benchmarks/runs/
    python benchmarks/learning.py report --suite generative         # table + curves

``run`` keeps ``--jobs`` training processes going at once (the machine's cores are shared between
them; each run's three seeds are one vmapped program) and resumes a run whose directory exists.
``report`` copies each run's config and JSONL logs to ``benchmarks/results/learning/`` (so the
numbers in the docs can be re-derived; a run not in ``benchmarks/runs/`` keeps its earlier record)
and writes the table and one curve per task.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RUNS = ROOT / "benchmarks" / "runs"
RECORD = ROOT / "benchmarks" / "results" / "learning"

#: Settings shared by every run of the ``generative`` suite: networks, sampler steps, warm-up and
#: evaluation cadence reduced so that 8 algorithms x 3 tasks x 3 seeds fit in about an hour of a
#: 2-core CPU. Everything not listed keeps its paper default.
REDUCED = ["algo.actor.width=64", "algo.actor.depth=2", "algo.critic.width=64",
           "algo.critic.depth=2", "off_policy.batch_size=256", "off_policy.warmup_frames=1000", "eval_every=1000",
           "eval_episodes=10"]
#: Per-algorithm reductions on top of :data:`REDUCED` (paper values in the comments).
REDUCED_ALGO = {
    "sac": [],
    "qsm": ["algo.diffusion_steps=5"],  # 20
    "idem": ["algo.diffusion_steps=5", "algo.num_reverse_samples=32"],  # 20, 500
    "dacer": ["algo.diffusion_steps=5", "algo.entropy_samples=64", "algo.alpha_every=1000"],  # 20, 200, 10K
    "dime": ["algo.diffusion_steps=5"],  # 16
    "sdac": ["algo.diffusion_steps=5", "algo.num_reverse_samples=32"],  # 20, 500
    "qvpo": ["algo.diffusion_steps=5", "algo.train_samples=32"],  # 20, 64
    # 32 particles at KL 1.8 keep the paper's ~5 effective particles (64 / e^2.5 ~ 32 / e^1.8)
    "dpmd": ["algo.diffusion_steps=5", "algo.num_particles=32", "algo.target_kl=1.8"],  # 20, 64, 2.5
}
#: The side-by-side check against flow-rl (issue 8): the same reduced settings on both sides,
#: stated in benchmarks/results/reference/README.md; flow-rl's side is run outside this repo.
REFERENCE_CHECK = ["algo.actor.width=64", "algo.actor.depth=2", "algo.critic.width=64",
                   "algo.critic.depth=2", "off_policy.batch_size=256", "off_policy.warmup_frames=1000", "eval_every=3000",
                   "eval_episodes=10"]
REFERENCE_ALGO = {
    "qsm": ["algo.diffusion_steps=5"],  # 20
    "dacer": ["algo.diffusion_steps=5", "algo.entropy_samples=64", "algo.alpha_every=1000"],
    "sdac": ["algo.diffusion_steps=5", "algo.num_reverse_samples=32"],  # 20, 500
}
SUITES = {
    "baselines": {"algos": ["sac", "td3"], "envs": ["gym/Hopper-v5", "gym/HalfCheetah-v5"],
                  "steps": 100_000, "common": [], "per_algo": {}, "prefix": ""},
    "generative": {"algos": list(REDUCED_ALGO),
                   "envs": ["gym/InvertedPendulum-v5", "gym/Hopper-v5", "dmc/cartpole-balance"],
                   "steps": 10_000, "common": REDUCED, "per_algo": REDUCED_ALGO,
                   "prefix": "gen-"},
    "reference": {"algos": list(REFERENCE_ALGO), "envs": ["gym/Hopper-v5"], "steps": 30_000,
                  "common": REFERENCE_CHECK, "per_algo": REFERENCE_ALGO, "prefix": "ref-"},
}


def name(algo: str, env: str, prefix: str = "") -> str:
    """Run directory name of ``algo`` on ``env`` within a suite."""
    return f"{prefix}{algo}-{env.split('/')[1]}"


def run(args: argparse.Namespace) -> None:
    """Train every (algo, env) of the suite, ``args.jobs`` processes at a time."""
    suite = SUITES[args.suite]
    steps = args.steps or suite["steps"]
    RUNS.mkdir(parents=True, exist_ok=True)
    queue = []
    for env in args.envs or suite["envs"]:
        for algo in args.algos or suite["algos"]:
            run_dir = RUNS / name(algo, env, suite["prefix"])
            ov = [f"algo={algo}", f"env={env}", "seeds=3", f"frames={steps}", f"run_dir={run_dir}",
                  "progress=false", "checkpoint_every=25000", *suite["common"],
                  *suite["per_algo"].get(algo, [])]
            if (run_dir / "config.yaml").exists():
                ov = [f"resume={run_dir}", f"frames={steps}", "progress=false"]
            queue.append((run_dir, ov))
    running: list[tuple[subprocess.Popen, Path, float]] = []
    while queue or running:
        while queue and len(running) < args.jobs:
            run_dir, ov = queue.pop(0)
            log = open(RUNS / f"{run_dir.name}.log", "a")  # noqa: SIM115
            proc = subprocess.Popen([sys.executable, "-m", "fluxrl", "train", *ov], stdout=log,
                                    stderr=subprocess.STDOUT)
            running.append((proc, run_dir, time.time()))
        time.sleep(2)
        for item in [r for r in running if r[0].poll() is not None]:
            proc, run_dir, t0 = item
            print(f"{run_dir.name}: exit {proc.returncode} after {time.time() - t0:.0f} s",
                  flush=True)
            running.remove(item)


def _rows(path: Path) -> list[dict]:
    from fluxrl.logger import read_jsonl  # reads the ``step`` column of older records as ``frame``

    return read_jsonl(path)


def report(args: argparse.Namespace) -> None:
    """Copy the suite's logs into the record, print and write its table, plot one PNG per task."""
    sys.path.insert(0, str(ROOT / "src"))
    from fluxrl.plot import plot_runs

    suite = SUITES[args.suite]
    RECORD.mkdir(parents=True, exist_ok=True)
    lines = ["| task | algo | frames | final return (mean +- std over seeds) | per seed | "
             "last 3 evals (mean) | best eval (mean over seeds) | recorded |",
             "|---|---|---|---|---|---|---|---|"]
    for env in suite["envs"]:
        dirs = []
        for algo in suite["algos"]:
            src = RUNS / name(algo, env, suite["prefix"])
            dst = RECORD / src.name
            if (src / "config.yaml").exists():  # a fresh run replaces its record
                dst.mkdir(parents=True, exist_ok=True)
                shutil.copy(src / "config.yaml", dst / "config.yaml")
                shutil.copy(src / "meta.json", dst / "meta.json")
                for sd in sorted(src.glob("seed_*")):
                    (dst / sd.name).mkdir(exist_ok=True)
                    for f in ("eval.jsonl", "train.jsonl"):
                        shutil.copy(sd / f, dst / sd.name / f)
            elif not (dst / "config.yaml").exists():
                continue  # neither run nor record: not in the table
            evals = [_rows(p) for p in sorted(dst.glob("seed_*/eval.jsonl"))]
            n = min(len(e) for e in evals)
            rets = np.array([[r["return_mean"] for r in e[:n]] for e in evals])
            final = rets[:, -1]
            lines.append(f"| {env} | {algo} | {evals[0][n - 1]['step']} | {final.mean():.0f} +- "
                         f"{final.std():.0f} | {', '.join(f'{x:.0f}' for x in final)} | "
                         f"{rets[:, -3:].mean():.0f} | {rets.mean(0).max():.0f} | "
                         f"{json.loads((dst / 'meta.json').read_text())['started'][:10]} |")
            dirs.append(dst)
        if dirs:
            img = f"learning-{suite['prefix']}{env.split('/')[1]}.png"
            plot_runs(dirs, ROOT / "docs" / "img" / img)
    table = "\n".join(lines)
    print(table)
    (RECORD / f"table{'-' + args.suite if suite['prefix'] else ''}.md").write_text(table + "\n")


REFERENCE = ROOT / "benchmarks" / "results" / "reference"


def _curves(run: Path) -> tuple[np.ndarray, np.ndarray]:
    """``(steps [T], returns [seeds, T])`` of a run's per-seed ``eval.jsonl`` files, cut to the
    evaluation steps every seed has."""
    evals = [{r["frame"]: r["return_mean"] for r in _rows(p)}
             for p in sorted(run.glob("seed_*/eval.jsonl"))]
    if not evals:
        raise SystemExit(f"no seed_*/eval.jsonl under {run}")
    steps = sorted(set.intersection(*(set(e) for e in evals)))
    return np.array(steps), np.array([[e[t] for t in steps] for e in evals])


def compare(args: argparse.Namespace) -> None:
    """fluxrl's ``reference`` suite against flow-rl's runs of the same settings: per agent the
    final return and the mean over the curve (evaluations both sides have) per seed, whether
    fluxrl's seed mean lies within the range of flow-rl's seeds, and one overlaid plot."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    env = "Hopper-v5"
    algos = list(REFERENCE_ALGO)
    lines = ["| agent | flow-rl final (mean +- std) | fluxrl final (mean +- std) | final within "
             "flow-rl's seed range | flow-rl mean over curve | fluxrl mean over curve | curve "
             "mean within range | flow-rl seeds (final) | fluxrl seeds (final) |",
             "|---|---|---|---|---|---|---|---|---|"]
    fig, axes = plt.subplots(1, len(algos), figsize=(5 * len(algos), 3.6), squeeze=False)
    for ax, algo in zip(axes[0], algos, strict=True):
        ref_steps, ref = _curves(REFERENCE / f"flowrl-{algo}-{env}")
        our_steps, ours = _curves(RECORD / f"ref-{algo}-{env}")
        common = np.intersect1d(ref_steps, our_steps)
        ref_c = ref[:, np.isin(ref_steps, common)]
        our_c = ours[:, np.isin(our_steps, common)]
        cells = []
        for f in (lambda r: r[:, -1], lambda r: r.mean(1)):
            r, o = f(ref_c), f(our_c)
            inside = "yes" if r.min() <= o.mean() <= r.max() else "no"
            cells.append((f"{r.mean():.0f} +- {r.std():.0f}", f"{o.mean():.0f} +- {o.std():.0f}",
                          inside))
        (rf, of, fin), (rc, oc, cin) = cells
        lines.append(f"| {algo} | {rf} | {of} | {fin} | {rc} | {oc} | {cin} | "
                     f"{', '.join(f'{x:.0f}' for x in ref_c[:, -1])} | "
                     f"{', '.join(f'{x:.0f}' for x in our_c[:, -1])} |")
        for data, steps, colour, label in ((ref, ref_steps, "tab:orange", "flow-rl"),
                                           (ours, our_steps, "tab:blue", "fluxrl")):
            for row in data:
                ax.plot(steps, row, color=colour, alpha=0.35, lw=0.8)
            ax.plot(steps, data.mean(0), color=colour, lw=2, label=f"{label} (mean of "
                    f"{len(data)} seeds)")
        ax.set_title(f"{algo} on {env}")
        ax.set_xlabel("frames")
        ax.set_ylabel("evaluation return")
        ax.legend(fontsize=8)
    fig.tight_layout()
    img = ROOT / "docs" / "img" / f"reference-{env}.png"
    fig.savefig(img, dpi=80)
    table = "\n".join(lines)
    print(table)
    (REFERENCE / "comparison.md").write_text(
        "Made by `python benchmarks/learning.py compare` from "
        f"`benchmarks/results/learning/ref-*-{env}` (fluxrl) and "
        f"`benchmarks/results/reference/flowrl-*-{env}` (flow-rl). \"Within range\": fluxrl's "
        "mean over its seeds lies between the lowest and the highest of flow-rl's seeds. Curve "
        "means are over the evaluations both sides have.\n\n" + table + "\n")
    print(f"wrote {img} and {REFERENCE / 'comparison.md'}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run")
    r.add_argument("--suite", choices=list(SUITES), default="baselines")
    r.add_argument("--steps", type=int, default=None, help="frames per run (default: the suite's)")
    r.add_argument("--algos", nargs="*", default=None)
    r.add_argument("--envs", nargs="*", default=None)
    r.add_argument("--jobs", type=int, default=4, help="training processes at once")
    r.set_defaults(func=run)
    rep = sub.add_parser("report")
    rep.add_argument("--suite", choices=list(SUITES), default="baselines")
    rep.set_defaults(func=report)
    cmp = sub.add_parser("compare", help="fluxrl's reference suite against flow-rl's runs")
    cmp.set_defaults(func=compare)
    args = p.parse_args()
    args.func(args)


if __name__ == "__main__":
    main()
