"""Command line: ``fluxrl train|demo|eval|algos|plot|toy``. User mistakes print one line and exit 2."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from fluxrl.errors import FluxError, TrainingDiverged

DEMO = ["algo=sac", "env=gym/Pendulum-v1", "seeds=3", "steps=12000", "warmup=1000",
        "eval_every=1000", "eval_episodes=5", "checkpoint_every=4000", "algo.actor.width=64",
        "algo.critic.width=64"]


def _train(args: argparse.Namespace) -> int:
    from fluxrl.config import compose
    from fluxrl.train.run import train

    cfg = compose(args.overrides)
    result = train(cfg, args.overrides)
    final = result.eval_returns[-1] if len(result.eval_returns) else []
    print(f"run_dir: {result.run_dir}")
    print("final evaluation return per seed: " + ", ".join(f"{r:.1f}" for r in final))
    return 0


def _demo(args: argparse.Namespace) -> int:
    args.overrides = DEMO + [f"run_dir={args.run_dir}"] + args.overrides
    code = _train(args)
    print(f"learning curves: {Path(args.run_dir) / 'curves.png'}")
    return code


def _eval(args: argparse.Namespace) -> int:
    from fluxrl.train.run import evaluate_run

    out = evaluate_run(Path(args.run_dir), args.episodes, args.video)
    rets = out["returns"]
    print(f"checkpoint at frame {out['frame']}: return {rets.mean():.1f} +- {rets.std():.1f} "
          f"over {rets.size} episodes")
    for i, r in enumerate(rets):
        print(f"  seed row {i}: mean {r.mean():.1f}  min {r.min():.1f}  max {r.max():.1f}")
    for v in out["videos"]:
        print(f"video: {v}")
    return 0


def _plot(args: argparse.Namespace) -> int:
    from fluxrl.plot import plot_runs

    for d in args.run_dirs:
        if not Path(d).is_dir():
            raise FluxError(f"{d} is not a directory; pass run directories written by fluxrl train")
    out = Path(args.out) if args.out else Path(args.run_dirs[0]) / "curves.png"
    print(plot_runs([Path(d) for d in args.run_dirs], out, args.title))
    return 0


def _algos(args: argparse.Namespace) -> int:
    from fluxrl.taxonomy import algorithms_markdown, grid_markdown

    print(grid_markdown() + "\n\n" + algorithms_markdown())
    return 0


def _toy(args: argparse.Namespace) -> int:
    from fluxrl.toy import run_toy

    algo = "qsm"
    rest = []
    for ov in args.overrides:
        if ov.startswith("algo="):
            algo = ov.split("=", 1)[1]
        else:
            rest.append(ov)
    out = run_toy(algo, rest, Path(args.out), explore_noise=not args.no_noise)
    print(f"run_dir: {out['run_dir']}")
    print("fraction of samples within 0.25 of each bump: "
          + ", ".join(f"{f:.3f}" for f in out["mode_fractions"]))
    print(f"picture: {out['png']}")
    return 0


def parser() -> argparse.ArgumentParser:
    """The ``fluxrl`` argument parser."""
    p = argparse.ArgumentParser(prog="fluxrl", description="RL with diffusion and flow policies")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    t = sub.add_parser("train", help="train agents: fluxrl train algo=sac env=gym/Hopper-v5 seeds=3",
                       description="Hydra-style key=value overrides of fluxrl.config.Config, e.g. "
                       "algo=td3 env=dmc/cheetah-run seeds=5 steps=100000 run_dir=runs/x "
                       "algo.lr_actor=1e-4; resume=RUN_DIR continues a run.")
    t.add_argument("overrides", nargs="*", help="key=value")
    t.set_defaults(func=_train)
    d = sub.add_parser("demo", help="a short SAC run on Pendulum-v1 (3 seeds, ~3 min on 2 cores) "
                       "with learning curves")
    d.add_argument("--run-dir", default="runs/demo")
    d.add_argument("overrides", nargs="*", help="extra key=value overrides")
    d.set_defaults(func=_demo)
    e = sub.add_parser("eval", help="evaluate the latest checkpoint of a run (--video for mp4)")
    e.add_argument("run_dir")
    e.add_argument("--episodes", type=int, default=10)
    e.add_argument("--video", action="store_true", help="write mp4s to RUN_DIR/videos (headless)")
    e.set_defaults(func=_eval)
    a = sub.add_parser("algos", help="the taxonomy grid (guidance x reference policy) and what "
                       "is implemented")
    a.set_defaults(func=_algos)
    pl = sub.add_parser("plot", help="learning curves of one or more runs to a PNG")
    pl.add_argument("run_dirs", nargs="+")
    pl.add_argument("--out", default=None, help="PNG path (default RUN_DIR/curves.png)")
    pl.add_argument("--title", default=None)
    pl.set_defaults(func=_plot)
    ty = sub.add_parser("toy", help="train on a 2-D bandit with four reward bumps in seconds and "
                        "picture the policy's action samples: fluxrl toy algo=qsm --out toy.png")
    ty.add_argument("overrides", nargs="*", help="algo=NAME and extra key=value overrides")
    ty.add_argument("--out", default="toy.png", help="PNG path (default toy.png)")
    ty.add_argument("--no-noise", action="store_true",
                    help="sample without the exploration noise an agent adds (QSM: N(0, 0.1^2))")
    ty.set_defaults(func=_toy)
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``fluxrl`` command."""
    args = parser().parse_args(argv)
    try:
        return args.func(args)
    except TrainingDiverged as exc:
        print(f"fluxrl: training stopped: {exc}", file=sys.stderr)
        return 3
    except FluxError as exc:
        print(f"fluxrl: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("fluxrl: interrupted; resume from the last checkpoint with resume=RUN_DIR",
              file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
