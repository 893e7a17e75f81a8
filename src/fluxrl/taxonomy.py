"""The paper's taxonomy (FlowRL, arXiv 2603.27450, Table 1) as data, marked with what fluxrl
implements. ``fluxrl algos`` prints it; ``docs/taxonomy.md`` is generated from it."""

from __future__ import annotations

from fluxrl.agents.base import FOLLOWS
from fluxrl.agents.registry import REGISTRY, get_algo

#: Rows of Table 1: guidance mechanism -> one-line description.
GUIDANCE = {
    "best_of_n": "Best-of-N sampling: fit the reference, pick the argmax-Q of N samples",
    "q_guidance": "Q-value guidance: score = grad log nu + grad_a Q / lambda",
    "weighted_matching": "Weighted matching: diffusion / flow loss weighted by exp(Q / lambda)",
    "reparam": "Reparameterisation: maximise Q of the generated action",
    "policy_gradient": "Policy gradient: PPO surrogate with a tractable or surrogate likelihood",
}
#: Columns of Table 1: reference policy nu.
REFERENCE = {"uniform": "nu = Unif(A) (max-entropy)", "previous": "nu = pi_k-1 (mirror descent)",
             "dataset": "nu = pi_D (behaviour-regularised)"}
#: The algorithms the paper places in each cell (lower-case registry names).
CELLS: dict[tuple[str, str], list[str]] = {
    ("best_of_n", "dataset"): ["idql", "sfbc"],
    ("q_guidance", "uniform"): ["qsm", "idem", "dps"],
    ("q_guidance", "dataset"): ["dac", "qgpo", "diffusion-dice"],
    ("weighted_matching", "uniform"): ["sdac", "maxentdp", "qvpo"],
    ("weighted_matching", "previous"): ["dpmd", "fpmd"],
    ("weighted_matching", "dataset"): ["qipo"],
    ("reparam", "uniform"): ["dacer", "dacerv2", "dime"],
    ("reparam", "dataset"): ["diffusion-ql", "edp", "bdpo", "fql"],
    ("policy_gradient", "previous"): ["dppo", "genpo", "fpo", "fpo_pp"],
}


def grid_markdown() -> str:
    """Table 1 with implemented algorithms in bold and marked, plus the baselines."""
    get_algo("sac")  # populate the registry
    head = "| guidance \\ reference | " + " | ".join(REFERENCE.values()) + " |"
    lines = [head, "|---" * (len(REFERENCE) + 1) + "|"]
    for fam, desc in GUIDANCE.items():
        cells = []
        for ref in REFERENCE:
            names = CELLS.get((fam, ref), [])
            extra = [n for n, a in REGISTRY.items()
                     if a.family == fam and a.reference == ref and n not in names]
            shown = [(f"**{n}** (yes{', FlowRL protocol' if REGISTRY[n].follows == 'flowrl' else ''})"
                      if n in REGISTRY else n) for n in names + extra]
            cells.append(", ".join(shown) or "-")
        lines.append(f"| {desc} | " + " | ".join(cells) + " |")
    base = [f"{n} ({a.reference}, {a.setting})" for n, a in REGISTRY.items()
            if a.family == "baseline"]
    done = sum(1 for n in REGISTRY if REGISTRY[n].family != "baseline")
    total = sum(len(v) for v in CELLS.values())
    lines += ["", f"Implemented in the grid: {done} of {total}. Baselines outside the grid: "
              + ", ".join(base) + "."]
    return "\n".join(lines)


def supported_models(name: str) -> list[str]:
    """Generative models an algorithm accepts as ``algo.model``, found by running its config's
    own validation on each (so the docs cannot drift from the checks); [] for non-generative actors (SAC, TD3)."""
    import dataclasses

    from fluxrl.errors import FluxError
    from fluxrl.generative import MODELS

    cls = get_algo(name).config
    if "model" not in {f.name for f in dataclasses.fields(cls)}:
        return []
    ok = []
    for model in MODELS:
        try:
            cls(model=model).validate()
        except FluxError:
            continue
        ok.append(model)
    return ok


def algorithms_markdown() -> str:
    """One row per registered algorithm: its cell, setting, generative models and paper."""
    get_algo("sac")
    lines = ["| algo | guidance | reference | setting | defaults follow | `algo.model` choices "
             "(default first) | paper |", "|---|---|---|---|---|---|---|"]
    for name, a in REGISTRY.items():
        models = supported_models(name)
        if models:
            default = a.config().model
            models = [default] + [m for m in models if m != default]
        shown = ", ".join(models) if models else "none (not a generative policy)"
        lines.append(f"| `{name}` | {a.family} | {a.reference} | {a.setting} | "
                     f"{FOLLOWS[a.follows]} | {shown} | {a.paper} |")
    return "\n".join(lines)


def taxonomy_markdown() -> str:
    """The generated docs page (docs/taxonomy.md)."""
    return ("# Taxonomy\n\nGenerated from the algorithm registry by "
            "`fluxrl.taxonomy.taxonomy_markdown()` (`fluxrl algos` prints the same grid); "
            "`tests/test_docs.py` keeps it in sync. Objective: maximise E_pi[Q(s,a)] - lambda "
            "KL(pi || nu); each algorithm is a guidance mechanism (row) and a reference policy "
            "nu (column), after FlowRL (arXiv 2603.27450) Table 1. Bold names marked (yes) are "
            "implemented; the others are not yet. \"FlowRL protocol\" marks an algorithm whose "
            "defaults and update follow the FlowRL reference code (typoverflow/flow-rl at b1385e0 "
            "and bae22f4) where it departs from the original authors' code; each agent's "
            "docstring lists those departures. The others follow the original authors.\n\n" + grid_markdown()
            + "\n\n## Implemented algorithms\n\nThe generative-model column is found by running "
            "each algorithm's config validation on every model in `fluxrl.generative.MODELS`.\n\n"
            + algorithms_markdown() + "\n")
