"""Generated docs stay in sync with the code; every config field is documented."""

from pathlib import Path

from fluxrl import config as C
from fluxrl.docs import fields_with_docs, generated_docs, repo_docs_dir, stale_docs, write_docs

ROOT = Path(__file__).resolve().parents[1]


def test_generated_docs_in_sync():
    """docs/configuration.md, docs/taxonomy.md, ... (the list of ``generated_docs``) are current."""
    assert repo_docs_dir() == ROOT / "docs"
    stale = [p.name for p in stale_docs(ROOT / "docs")]
    assert not stale, f"generated docs out of date: {', '.join(stale)}; run: fluxrl docs"


def test_every_config_field_is_documented():
    import dataclasses

    for cls in [C.Config, C.NetConfig, *C.algo_configs().values()]:
        documented = {f[0] for f in fields_with_docs(cls)}
        names = {f.name for f in dataclasses.fields(cls)} - {"defaults"}
        assert names == documented, f"{cls.__name__}: undocumented {names - documented}"


def test_docs_command_writes_and_checks(tmp_path):
    """``fluxrl docs --check`` lists stale pages and writes nothing; ``fluxrl docs`` fixes them."""
    from fluxrl.cli import main

    names = set(generated_docs())
    assert {"configuration.md", "taxonomy.md"} <= names
    (tmp_path / "taxonomy.md").write_text("old\n")
    assert main(["docs", "--check", "--out", str(tmp_path)]) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["taxonomy.md"]
    assert (tmp_path / "taxonomy.md").read_text() == "old\n"
    assert main(["docs", "--out", str(tmp_path)]) == 0
    assert {p.name for p in tmp_path.iterdir()} == names
    assert stale_docs(tmp_path) == []
    assert main(["docs", "--check", "--out", str(tmp_path)]) == 0
    assert write_docs(tmp_path) == []


def test_registered_algorithms_sit_in_their_cells():
    from fluxrl.agents.registry import REGISTRY, get_algo
    from fluxrl.taxonomy import CELLS, GUIDANCE

    get_algo("sac")
    for name, info in REGISTRY.items():
        if info.family == "baseline":
            continue
        assert info.family in GUIDANCE
        assert name in CELLS.get((info.family, info.reference), []), name
