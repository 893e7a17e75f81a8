"""Generated documentation: the configuration reference, from the config dataclasses' field docs,
and the list of every generated page (:func:`generated_docs`), which ``fluxrl docs`` writes and
``fluxrl docs --check`` and ``tests/test_docs.py`` compare."""

from __future__ import annotations

import dataclasses
import inspect
import re
from collections.abc import Callable
from pathlib import Path

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
             "| suite | off_policy.batch_size | off_policy.warmup_frames | action_repeat | "
             "network (width x depth, activation) |",
             "|---|---|---|---|---|"]
    for suite, d in C.SUITE_DEFAULTS.items():
        n, op = d["net"], d["off_policy"]
        parts.append(f"| {suite} | {op.get('batch_size', '-')} | {op.get('warmup_frames', '-')} | "
                     f"{d['action_repeat']} | {n['depth']} x {n['width']}, {n['act']} |")
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
    sections = [("Run (`Config`)", C.Config)]
    sections += [(f"Trainer `{name}.*` (`{cls.__name__}`)", cls) for name, cls in C.TRAINERS.items()]
    sections += [("Networks (`algo.actor`, `algo.critic`)", C.NetConfig)]
    sections += [(f"`algo={name}` (`{cls.__name__}`)", cls) for name, cls in C.algo_configs().items()]
    for title, cls in sections:
        parts += ["", f"## {title}", "", (inspect.getdoc(cls) or "").split("\n")[0], "",
                  "| field | type | default | meaning and source |", "|---|---|---|---|"]
        for name, typ, default, doc in fields_with_docs(cls):
            parts.append(f"| `{name}` | `{typ.replace(' | ', ' or ')}` | `{default}` | {doc.replace('|', '/')} |")
    return "\n".join(parts) + "\n"


def generated_docs() -> dict[str, Callable[[], str]]:
    """Every generated docs page: file name inside ``docs/`` -> the function that returns its text.

    The one list that ``fluxrl docs`` (write), ``fluxrl docs --check`` and ``tests/test_docs.py``
    share; add a page here and all three pick it up."""
    from fluxrl.taxonomy import taxonomy_markdown

    return {"configuration.md": configuration_markdown, "taxonomy.md": taxonomy_markdown}


def repo_docs_dir() -> Path:
    """The ``docs/`` directory of the source checkout this package runs from (``src/fluxrl/`` ->
    ``docs/``). It does not exist when fluxrl is installed from a wheel; pass a directory then."""
    return Path(__file__).resolve().parents[2] / "docs"


def stale_docs(out_dir: Path | None = None) -> list[Path]:
    """Generated pages in ``out_dir`` (default :func:`repo_docs_dir`) that are missing or differ
    from what their generator returns now. Writes nothing."""
    out_dir = Path(out_dir) if out_dir is not None else repo_docs_dir()
    stale = []
    for name, make in generated_docs().items():
        path = out_dir / name
        if not path.is_file() or path.read_text() != make():
            stale.append(path)
    return stale


def write_docs(out_dir: Path | None = None) -> list[Path]:
    """Regenerate every page of :func:`generated_docs` into ``out_dir`` (default
    :func:`repo_docs_dir`, created if missing); returns the paths whose content changed."""
    out_dir = Path(out_dir) if out_dir is not None else repo_docs_dir()
    out_dir.mkdir(parents=True, exist_ok=True)
    changed = []
    for name, make in generated_docs().items():
        path = out_dir / name
        text = make()
        if not path.is_file() or path.read_text() != text:
            path.write_text(text)
            changed.append(path)
    return changed
