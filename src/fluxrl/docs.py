"""Generated documentation: the configuration reference, from the config dataclasses' field docs."""

from __future__ import annotations

import dataclasses
import inspect
import re

from fluxrl import config as C

_FIELD = re.compile(r"^\s+(\w+): ([^=]+?) = (.+?)\s+#: (.+)$")


def fields_with_docs(cls: type) -> list[tuple[str, str, str, str]]:
    """``(name, type, default, doc)`` for each documented field of a config dataclass, in field
    order; a field redeclared by a subclass takes the subclass's default and doc."""
    found: dict[str, tuple[str, str, str, str]] = {}
    for klass in reversed([k for k in cls.__mro__ if dataclasses.is_dataclass(k)]):
        for line in inspect.getsource(klass).splitlines():
            m = _FIELD.match(line)
            if m:
                name, typ, default, doc = m.groups()
                default = re.sub(r"field\(default_factory=(\w+)\)", r"\1()", default)
                found[name] = (name, typ.strip(), default.strip(), doc.strip())
    return [found[f.name] for f in dataclasses.fields(cls) if f.name in found]


def configuration_markdown() -> str:
    """The whole configuration reference (docs/configuration.md)."""
    parts = ["# Configuration reference",
             "",
             "Generated from the config dataclasses (`src/fluxrl/config.py` and each agent file) "
             "by `fluxrl.docs.configuration_markdown()`; "
             "`tests/test_docs.py` keeps this file in sync. Override any field on the command line "
             "(`fluxrl train algo.lr_actor=1e-4 seeds=5`). `None` defaults are filled per suite "
             "from the table below.",
             "",
             "## Suite defaults (paper Table 3 and Appendix A.3)",
             "",
             "| suite | batch_size | warmup | action_repeat | network (width x depth, activation) |",
             "|---|---|---|---|---|"]
    for suite, d in C.SUITE_DEFAULTS.items():
        n = d["net"]
        parts.append(f"| {suite} | {d['batch_size']} | {d['warmup']} | {d['action_repeat']} | "
                     f"{n['depth']} x {n['width']}, {n['act']} |")
    from fluxrl.task_defaults import TASK_DEFAULTS

    parts += ["", "## Per-suite and per-task algorithm defaults (`fluxrl.task_defaults`)", "",
              "Applied when the config is composed, after the suite defaults above and before "
              "validation, so they appear in the run's `config.yaml`. A value set on the command "
              "line always wins. Rows are applied in this order (a task's rows after its "
              "suite's).", "",
              "| algo | suite or task | values | source |", "|---|---|---|---|"]
    for row in TASK_DEFAULTS:
        vals = ", ".join(f"`{k}={v}`" for k, v in row.values.items())
        parts.append(f"| {row.algo} | `{row.where}` | {vals} | {row.source} |")
    sections = [("Run (`Config`)", C.Config), ("Networks (`algo.actor`, `algo.critic`)", C.NetConfig)]
    sections += [(f"`algo={name}` (`{cls.__name__}`)", cls) for name, cls in C.algo_configs().items()]
    for title, cls in sections:
        parts += ["", f"## {title}", "", (inspect.getdoc(cls) or "").split("\n")[0], "",
                  "| field | type | default | meaning and source |", "|---|---|---|---|"]
        for name, typ, default, doc in fields_with_docs(cls):
            parts.append(f"| `{name}` | `{typ.replace(' | ', ' or ')}` | `{default}` | {doc.replace('|', '/')} |")
    return "\n".join(parts) + "\n"
