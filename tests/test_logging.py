"""Logging sinks: JSONL rows, TensorBoard files, W&B calls, resume truncation, plots."""

from __future__ import annotations

import json
import sys
import types

import numpy as np
import yaml

from fluxrl.logger import RunLogger, read_jsonl
from fluxrl.plot import load_curves, plot_runs


class FakeWandb(types.ModuleType):
    def __init__(self):
        super().__init__("wandb")
        self.calls = []

    def init(self, **kw):
        self.calls.append(("init", kw))
        return self

    def log(self, data, step):
        self.calls.append(("log", data, step))

    def finish(self):
        self.calls.append(("finish",))


def _log_some(run_dir, seeds, resume_frame=None, wandb=False, start=1):
    lg = RunLogger(run_dir, seeds, tensorboard=True, wandb=wandb, wandb_project="p",
                   config={"a": 1}, resume_frame=resume_frame)
    for k in range(start, 5):
        lg.train(k * 100, {"critic_loss": np.array([k, 10 * k], float)[: len(seeds)]})
        lg.eval(k * 100, np.full((len(seeds), 3), float(k)), np.full((len(seeds), 3), 7))
    lg.close()


def test_jsonl_and_tensorboard_per_seed(tmp_path):
    _log_some(tmp_path, [3, 4])
    rows = read_jsonl(tmp_path / "seed_4" / "train.jsonl")
    assert [r["frame"] for r in rows] == [100, 200, 300, 400]
    assert [r["critic_loss"] for r in rows] == [10, 20, 30, 40]
    ev = read_jsonl(tmp_path / "seed_3" / "eval.jsonl")
    assert ev[1] == {"frame": 200, "return_mean": 2.0, "return_std": 0.0, "length_mean": 7.0}
    for s in (3, 4):
        events = list((tmp_path / "tb" / f"seed_{s}").glob("events.out.tfevents.*"))
        assert events and events[0].stat().st_size > 100


def test_resume_truncates_rows_after_the_checkpoint(tmp_path):
    _log_some(tmp_path, [0])
    _log_some(tmp_path, [0], resume_frame=200, start=3)  # crashed after 400, resumed from 200
    steps = [r["frame"] for r in read_jsonl(tmp_path / "seed_0" / "eval.jsonl")]
    assert steps == [100, 200, 300, 400]


def test_wandb_receives_seed_means(tmp_path, monkeypatch):
    fake = FakeWandb()
    monkeypatch.setitem(sys.modules, "wandb", fake)
    _log_some(tmp_path, [0, 1], wandb=True)
    logs = [c for c in fake.calls if c[0] == "log"]
    assert fake.calls[0][0] == "init" and fake.calls[-1] == ("finish",)
    assert ({"train/critic_loss": 5.5}, 100) in [(c[1], c[2]) for c in logs]


def test_plot_two_runs_and_curves(tmp_path):
    for name, algo in [("a", "sac"), ("b", "td3")]:
        d = tmp_path / name
        d.mkdir()
        (d / "config.yaml").write_text(yaml.safe_dump({"env": "gym/Hopper-v5",
                                                       "algo": {"name": algo}}))
        for s, scale in [(0, 1.0), (1, 2.0)]:
            (d / f"seed_{s}").mkdir()
            rows = [{"step": k * 10, "return_mean": scale * k} for k in range(1, 4)]
            (d / f"seed_{s}" / "eval.jsonl").write_text(
                "".join(json.dumps(r) + "\n" for r in rows))
    steps, rets = load_curves(tmp_path / "a")
    assert steps.tolist() == [10, 20, 30] and rets.shape == (2, 3)
    assert rets.mean(0).tolist() == [1.5, 3.0, 4.5]
    out = plot_runs([tmp_path / "a", tmp_path / "b"], tmp_path / "c.png")
    assert out.stat().st_size > 5000


def _tb_steps(run_dir, seed: int, tag: str) -> list[int]:
    """The steps TensorBoard itself shows for ``tag`` (its reader applies purge events)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run_dir / "tb" / f"seed_{seed}"))
    acc.Reload()
    return [e.step for e in acc.Scalars(tag)]


def test_resuming_a_finished_run_keeps_its_tensorboard_points(tmp_path):
    """A resume at the final checkpoint (frame 400) must not purge the point logged at 400."""
    _log_some(tmp_path, [0])
    RunLogger(tmp_path, [0], tensorboard=True, wandb=False, wandb_project="p", config={},
              resume_frame=400).close()
    assert _tb_steps(tmp_path, 0, "eval/return_mean") == [100, 200, 300, 400]
    _log_some(tmp_path, [0], resume_frame=200, start=3)  # a crash after 400, resumed from 200
    assert _tb_steps(tmp_path, 0, "eval/return_mean") == [100, 200, 300, 400]
