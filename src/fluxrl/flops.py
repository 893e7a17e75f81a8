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
from collections.abc import Callable
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
    """Sub-programs of an equation with how often each runs (``cond``: the costliest branch)."""
    p = eqn.params
    name = eqn.primitive.name
    if name == "scan":
        return [(p["jaxpr"], float(p["length"]))]
    if name == "cond":
        return [(max(p["branches"], key=jaxpr_matmul_flops), 1.0)]
    if name == "while":  # trip count unknown: counted once, like XLA
        return [(p["body_jaxpr"], 1.0), (p["cond_jaxpr"], 1.0)]
    subs = []
    for v in p.values():
        for item in v if isinstance(v, (tuple, list)) else (v,):
            if isinstance(item, (core.Jaxpr, core.ClosedJaxpr)):
                subs.append((item, 1.0))
    return subs


def jaxpr_matmul_flops(jaxpr: Any) -> float:
    """Matmul / convolution FLOPs of a (closed) jaxpr, loops times their trip counts."""
    jaxpr = getattr(jaxpr, "jaxpr", jaxpr)
    total = 0.0
    for eqn in jaxpr.eqns:
        if eqn.primitive.name == "dot_general":
            total += _dot_flops(eqn)
        elif eqn.primitive.name == "conv_general_dilated":
            total += _conv_flops(eqn)
        else:
            total += sum(n * jaxpr_matmul_flops(sub) for sub, n in _sub_jaxprs(eqn))
    return total


def matmul_flops(fn: Callable[..., Any], *args: Any) -> float:
    """Matmul FLOPs of one call ``fn(*args)`` (traced, not run)."""
    return jaxpr_matmul_flops(jax.make_jaxpr(fn)(*args))
