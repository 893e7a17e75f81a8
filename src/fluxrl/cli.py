"""Command line: ``fluxrl train|demo|eval|algos|plot|toy|docs``. User mistakes print one line and
exit 2.

Importing this module imports neither JAX nor the trainers (each command imports what it needs
when it runs), so ``fluxrl --help`` and ``fluxrl COMMAND --help`` answer at once."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from fluxrl.errors import FluxError, Interrupted, TrainingDiverged

DEMO = ["algo=sac", "env=gym/Pendulum-v1", "seeds=3", "frames=12000", "off_policy.warmup_frames=1000",
        "eval_every=1000", "eval_episodes=5", "checkpoint_every=4000", "algo.actor.width=64",
        "algo.critic.width=64"]
#: How long ``fluxrl demo`` takes, as the README and ``fluxrl demo --help`` state it (measured:
#: 62 s wall on a 2-core CPU under load ~1.5; tests/test_cli_ux.py keeps the README in step).
DEMO_DURATION = "about a minute on a 2-core CPU"


def _train(args: argparse.Namespace) -> int:
    from fluxrl.config import compose
    from fluxrl.train.run import train

    overrides = list(args.overrides)
    resume = [o.split("=", 1)[1] for o in overrides if o.startswith("resume=")]
    if resume and not any(o.startswith("algo=") for o in overrides):
        # compose the saved run's algorithm, so that its own keys (algo.lr_actor, ...) resolve
        import yaml

        saved = Path(resume[-1]) / "config.yaml"
        if saved.exists():
            name = (yaml.safe_load(saved.read_text()) or {}).get("algo", {}).get("name")
            overrides = ([f"algo={name}"] if isinstance(name, str) else []) + overrides
    cfg = compose(overrides)
    result = train(cfg, overrides)
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
    from fluxrl.plot import check_output_file, default_plot_path, plot_runs

    for d in args.run_dirs:
        if not Path(d).is_dir():
            raise FluxError(f"{d} is not a directory; pass run directories written by fluxrl train")
    dirs = [Path(d) for d in args.run_dirs]
    out = check_output_file(args.out if args.out else default_plot_path(dirs))
    print(plot_runs(dirs, out, args.title))
    return 0


def _algos(args: argparse.Namespace) -> int:
    from fluxrl.taxonomy import algorithms_markdown, grid_markdown

    print(grid_markdown() + "\n\n" + algorithms_markdown())
    return 0


def _toy(args: argparse.Namespace) -> int:
    from fluxrl.toy import RADIUS, run_toy  # light: run_toy checks --out before heavy imports

    algo = "qsm"
    rest = []
    for ov in args.overrides:
        if ov.startswith("algo="):
            algo = ov.split("=", 1)[1]
        else:
            rest.append(ov)
    out = run_toy(algo, rest, Path(args.out), explore_noise=not args.no_noise,
                  progress=lambda line: print(line, flush=True))
    from fluxrl.envs.toy import MODES

    if out["run_dir"] is not None:
        print(f"run_dir: {out['run_dir']}")
    print(f"fraction of samples within {RADIUS} of each bump: "
          + ", ".join(f"({m[0]:+.1f}, {m[1]:+.1f}) {f:.3f}"
                      for m, f in zip(MODES, out["mode_fractions"], strict=True)))
    print(f"picture: {out['png']}")
    return 0


def _docs(args: argparse.Namespace) -> int:
    from fluxrl.docs import generated_docs, repo_docs_dir, stale_docs, write_docs

    out = Path(args.out) if args.out else repo_docs_dir()
    if args.out is None and not out.is_dir():
        raise FluxError(f"no docs/ directory at {out} (fluxrl is not running from a source "
                        "checkout); pass --out DIR")
    if args.check:
        stale = stale_docs(out)
        for path in stale:
            print(f"stale: {path}")
        if stale:
            print(f"{len(stale)} of {len(generated_docs())} generated docs out of date; "
                  "run: fluxrl docs", file=sys.stderr)
            return 1
        print(f"all {len(generated_docs())} generated docs in {out} are up to date")
        return 0
    try:
        changed = write_docs(out)
    except OSError as exc:
        raise FluxError(f"cannot write the docs to {out}: {exc.strerror or exc}; pass --out DIR"
                        ) from None
    for path in changed:
        print(f"wrote {path}")
    print(f"{len(changed)} of {len(generated_docs())} generated docs changed in {out}")
    return 0


def parser() -> argparse.ArgumentParser:
    """The ``fluxrl`` argument parser."""
    p = argparse.ArgumentParser(prog="fluxrl", description="RL with diffusion and flow policies")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    t = sub.add_parser("train", help="train agents: fluxrl train algo=sac env=gym/Hopper-v5 seeds=3",
                       description="Hydra-style key=value overrides of fluxrl.config.Config, e.g. "
                       "algo=td3 env=dmc/cheetah-run seeds=5 frames=100000 run_dir=runs/x "
                       "algo.lr_actor=1e-4; resume=RUN_DIR continues a run.")
    t.add_argument("overrides", nargs="*", help="key=value")
    t.set_defaults(func=_train)
    d = sub.add_parser("demo", help=f"a short SAC run on Pendulum-v1 (3 seeds, {DEMO_DURATION}) "
                       "with learning curves",
                       description="SAC on Pendulum-v1, 3 seeds trained together, "
                       f"{DEMO_DURATION}; prints the final return per seed and "
                       "leaves logs, checkpoints and RUN_DIR/curves.png.")
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
    pl = sub.add_parser("plot", help="learning curves of one or more runs to a PNG",
                        description="Mean evaluation return over seeds (a marker per evaluation) "
                        "and its min-max spread, one panel per environment. Without --out: "
                        "RUN_DIR/curves.png for one run, ./curves.png for several (a run's own "
                        "curves are never overwritten by a comparison).")
    pl.add_argument("run_dirs", nargs="+")
    pl.add_argument("--out", default=None, help="PNG path (default: RUN_DIR/curves.png for one "
                    "run, ./curves.png for several)")
    pl.add_argument("--title", default=None)
    pl.set_defaults(func=_plot)
    ty = sub.add_parser("toy", help="train on a 2-D bandit with four reward bumps in seconds and "
                        "picture the policy's action samples: fluxrl toy algo=qsm --out toy.png",
                        description="Trains ALGO (default qsm) on a 2-D bandit whose reward is "
                        "four equal bumps, draws 1000 actions per seed from the trained policy "
                        "and pictures them on the reward landscape. The numbers (on the picture "
                        "and printed) are the fraction of the samples within 0.25 of each bump's "
                        "centre: a multimodal policy spreads over several bumps, SAC picks one. "
                        "The run goes to a temporary directory, removed at the end, unless "
                        "run_dir=PATH is given.")
    ty.add_argument("overrides", nargs="*", help="algo=NAME and extra key=value overrides "
                    "(e.g. seeds=2, run_dir=runs/toy to keep the run, progress=true for a bar)")
    ty.add_argument("--out", default="toy.png", help="PNG path (default toy.png), checked "
                    "before training")
    ty.add_argument("--no-noise", action="store_true",
                    help="sample without the exploration noise an agent adds (QSM: N(0, 0.1^2))")
    ty.set_defaults(func=_toy)
    dc = sub.add_parser("docs", help="regenerate the generated docs (docs/configuration.md, "
                        "docs/taxonomy.md); --check only reports stale ones",
                        description="Writes every page of fluxrl.docs.generated_docs() into the "
                        "source checkout's docs/ directory (or --out DIR). With --check, writes "
                        "nothing, lists the stale pages and exits 1 if any.")
    dc.add_argument("--check", action="store_true",
                    help="write nothing; list stale pages and exit 1 if there are any")
    dc.add_argument("--out", default=None, metavar="DIR",
                    help="directory of the pages (default: docs/ of the source checkout)")
    dc.set_defaults(func=_docs)
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``fluxrl`` command."""
    args = parser().parse_args(argv)
    try:
        return args.func(args)
    except TrainingDiverged as exc:
        print(f"fluxrl: training stopped: {exc}", file=sys.stderr)
        return 3
    except Interrupted as exc:
        print(f"fluxrl: interrupted: {exc}", file=sys.stderr)
        return 130
    except FluxError as exc:
        print(f"fluxrl: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("fluxrl: interrupted; continue a training run from its newest checkpoint with "
              "fluxrl train resume=RUN_DIR", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
