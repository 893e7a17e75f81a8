"""The trainer-layer redesign (issue 9) changed no off-policy number: six short runs recorded
before it (tests/golden_runs.py) give bit-identical evaluation curves and training metrics."""

from __future__ import annotations

import json

import pytest
from golden_runs import DATA, RUNS, curves, overrides


@pytest.mark.slow
@pytest.mark.parametrize("name", list(RUNS))
def test_offpolicy_curves_bit_identical(name, tmp_path):
    from fluxrl.config import compose
    from fluxrl.train.run import train

    ov = overrides(name, tmp_path / name)
    train(compose(ov), ov)
    recorded = json.loads(DATA.read_text())[name]
    recorded = {s: {k: [{"frame": r.pop("step"), **r} for r in rows] for k, rows in d.items()}
                for s, d in recorded.items()}
    assert curves(tmp_path / name) == recorded
