"""Matmul FLOPs of a JAX program, counted from its jaxpr with loop trip counts.

XLA's compiled ``cost_analysis()`` counts the body of a ``while`` loop once, whatever its trip
count: a ``lax.scan`` of 10 matmuls reports the FLOPs of one. Every diffusion sampler is such a
scan, so its cost would be under-reported by the number of denoising steps. This module walks the
jaxpr instead and multiplies what is inside a ``scan`` by its ``length``. It counts
``dot_general`` (2 M N K per product, batch dims included) and convolutions only: the work a dense
matmul benchmark measures, so ``count / time`` compares directly with a matmul's GFLOP/s.
Elementwise work is left out on purpose.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import jax
from jax.extend import core


def _dot_flops(eqn: Any) -> float:
    (lc, rc), (lb, rb) = eqn.params["dimension_numbers"]
    lhs, rhs = (v.aval.shape for v in eqn.invars)
    contract = math.prod(lhs[d] for d in lc)
    batch = math.prod(lhs[d] for d in lb)
    free_l = math.prod(s for d, s in enumerate(lhs) if d not in (*lc, *lb))
    free_r = math.prod(s for d, s in enumerate(rhs) if d not in (*rc, *rb))
    return 2.0 * batch * free_l * free_r * contract


def _conv_flops(eqn: Any) -> float:
    out = eqn.outvars[0].aval.shape
    rhs = eqn.invars[1].aval.shape
    dn = eqn.params["dimension_numbers"]
    out_feat = rhs[dn.rhs_spec[0]]
    kernel = math.prod(rhs) / out_feat  # in_features / groups x spatial window
    return 2.0 * math.prod(out) * kernel


def _sub_jaxprs(eqn: Any) -> list[tuple[Any, float]]:
    """Sub-programs of an equation other than ``cond`` with how often each runs."""
    p = eqn.params
    name = eqn.primitive.name
    if name == "scan":
        return [(p["jaxpr"], float(p["length"]))]
    if name == "while":  # trip count unknown: counted once, like XLA
        return [(p["body_jaxpr"], 1.0), (p["cond_jaxpr"], 1.0)]
    subs = []
    for v in p.values():
        for item in v if isinstance(v, (tuple, list)) else (v,):
            if isinstance(item, (core.Jaxpr, core.ClosedJaxpr)):
                subs.append((item, 1.0))
    return subs


def jaxpr_matmul_flops(jaxpr: Any, cond_rates: Iterator[float] | None = None) -> float:
    """Matmul / convolution FLOPs of a (closed) jaxpr, loops times their trip counts.

    A ``cond`` whose branches all cost the same counts once. Otherwise, with ``cond_rates`` None it
    counts its costliest branch (an upper bound); else the next rate ``r`` of the iterator is taken
    and it counts ``r * costliest + (1 - r) * cheapest``."""
    jaxpr = getattr(jaxpr, "jaxpr", jaxpr)
    total = 0.0
    for eqn in jaxpr.eqns:
        name = eqn.primitive.name
        if name == "dot_general":
            total += _dot_flops(eqn)
        elif name == "conv_general_dilated":
            total += _conv_flops(eqn)
        elif name == "cond":
            branches = sorted(eqn.params["branches"], key=jaxpr_matmul_flops)
            lo, hi = branches[0], branches[-1]
            if cond_rates is None or jaxpr_matmul_flops(lo) == jaxpr_matmul_flops(hi):
                total += jaxpr_matmul_flops(hi, cond_rates)
            else:
                rate = next(cond_rates, None)
                if rate is None:
                    raise ValueError("more conds with branches of different cost than cond_rates")
                total += (rate * jaxpr_matmul_flops(hi, cond_rates)
                          + (1 - rate) * jaxpr_matmul_flops(lo, cond_rates))
        else:
            total += sum(n * jaxpr_matmul_flops(sub, cond_rates) for sub, n in _sub_jaxprs(eqn))
    return total


def matmul_flops(fn: Callable[..., Any], *args: Any,
                 cond_rates: Sequence[float] | None = None) -> float:
    """Matmul FLOPs of one call ``fn(*args)`` (traced, not run).

    ``cond_rates``: for each ``cond`` whose branches differ in cost, in program order (a loop body
    once), the fraction of calls in which its costliest branch runs, e.g. ``[1 / 2]`` for an actor
    step every second update. None counts the costliest branch of every cond (an upper bound). A
    count that does not match the program's conds is an error."""
    jaxpr = jax.make_jaxpr(fn)(*args)
    if cond_rates is None:
        return jaxpr_matmul_flops(jaxpr)
    rates = iter(cond_rates)
    total = jaxpr_matmul_flops(jaxpr, rates)
    if next(rates, None) is not None:
        raise ValueError("fewer conds with branches of different cost than cond_rates")
    return total
