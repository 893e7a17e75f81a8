"""The trainer-layer redesign (issue 9) changed no off-policy number: six short runs recorded
at the commit before it (tests/golden_runs.py) give bit-identical evaluation curves and training
metrics on the machine that recorded them."""

from __future__ import annotations

import pytest
from golden_runs import RUNS, curves, fingerprint, overrides, record_for


@pytest.mark.slow
@pytest.mark.parametrize("name", list(RUNS))
def test_offpolicy_curves_bit_identical(name, tmp_path):
    from fluxrl.config import compose
    from fluxrl.train.run import train

    fp = fingerprint()
    recorded = record_for(fp)
    if recorded is None:
        pytest.skip(f"no golden record for this machine ({fp['cpu']}, {fp['cores']} cores, "
                    f"jaxlib {fp['jaxlib']}); add one with `python tests/golden_runs.py record "
                    "32f04c2`")
    ov = overrides(name, tmp_path / name)
    train(compose(ov), ov)
    expected = {s: {k: [{"frame": r.pop("step"), **r} if "step" in r else r for r in rows]
                    for k, rows in d.items()} for s, d in recorded[name].items()}
    assert curves(tmp_path / name) == expected
