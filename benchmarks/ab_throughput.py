"""A/B throughput of two checkouts, run alternately back to back (A B A B ...), one subprocess per
configuration and round, with ``benchmarks/throughput.py`` of each checkout timing its own trainer.

    python benchmarks/ab_throughput.py --a /tmp/old --b . --rounds 3 --out benchmarks/results/ab

``--a`` / ``--b`` are repository roots (``git worktree add /tmp/old <commit>`` makes one); each
side imports fluxrl from its own ``src`` (PYTHONPATH). The table gives every round's ms per update
(so the noise between repeats is visible next to the A/B difference) and the medians.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path


def run_side(root: Path, configs: list[str], out: Path) -> list[dict]:
    """One round of ``root``'s throughput benchmark; its result rows."""
    env = dict(os.environ, PYTHONPATH=str(root / "src"))
    subprocess.run([sys.executable, str(root / "benchmarks" / "throughput.py"), "--only", *configs,
                    "--repeats", "1", "--out", str(out)], env=env, check=True,
                   stdout=subprocess.DEVNULL)
    data = json.loads(max(out.glob("*.json")).read_text())
    return data["results"] if isinstance(data, dict) else data


def commit(root: Path) -> str:
    out = subprocess.run(["git", "-C", str(root), "rev-parse", "--short", "HEAD"],
                         capture_output=True, text=True)
    dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--", "src"],
                           capture_output=True, text=True).stdout.strip()
    return out.stdout.strip() + (" + working tree" if dirty else "")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--a", required=True, type=Path, help="repository root of side A (baseline)")
    p.add_argument("--b", required=True, type=Path, help="repository root of side B")
    p.add_argument("--configs", nargs="+", default=["sac-2x256", "sac-2x32", "sdac"])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--out", type=Path, default=Path("benchmarks/results/ab"))
    args = p.parse_args()
    rows: dict[tuple[str, str], list[dict]] = {}
    for k in range(args.rounds):
        for side, root in (("A", args.a), ("B", args.b)):
            for r in run_side(root.resolve(), args.configs, args.out / f"{side}-{k}"):
                rows.setdefault((r["name"], side), []).append(r)
            print(f"round {k + 1} {side} done {time.strftime('%H:%M:%S')}", flush=True)
    lines = [f"A = {commit(args.a)}, B = {commit(args.b)}; {args.rounds} alternating rounds, "
             f"{time.strftime('%Y-%m-%d %H:%M')} UTC, {os.cpu_count()} CPUs", "",
             "| config | side | ms/update per round | median | matmul fraction (median) | "
             "env steps/s e2e (median) | compile s (median) |", "|---|---|---|---|---|---|---|"]
    for name in args.configs:
        for side in ("A", "B"):
            rs = rows[(name, side)]
            u = [r["update_ms"] for r in rs]
            med = statistics.median
            lines.append(f"| {name} | {side} | {', '.join(f'{x:.3f}' for x in u)} | {med(u):.3f} | "
                         f"{med(r['matmul_fraction'] for r in rs):.2f} | "
                         f"{med(r['env_steps_per_s'] for r in rs):.0f} | "
                         f"{med(r['compile_s'] for r in rs):.2f} |")
        a = [r["update_ms"] for r in rows[(name, "A")]]
        b = [r["update_ms"] for r in rows[(name, "B")]]
        ratios = [y / x for x, y in zip(a, b, strict=True)]
        lines.append(f"| {name} | B/A per round | {', '.join(f'{x:.3f}' for x in ratios)} | "
                     f"{statistics.median(ratios):.3f} | | | |")
    table = "\n".join(lines) + "\n"
    (args.out / "table.md").write_text(table)
    print(table)


if __name__ == "__main__":
    main()
