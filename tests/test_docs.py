"""Generated docs stay in sync with the code; every config field is documented."""

from pathlib import Path

from fluxrl import config as C
from fluxrl.docs import configuration_markdown, fields_with_docs

ROOT = Path(__file__).resolve().parents[1]


def test_configuration_reference_in_sync():
    assert (ROOT / "docs" / "configuration.md").read_text() == configuration_markdown(), (
        "regenerate: python -c \"from fluxrl.docs import configuration_markdown as c; "
        "open('docs/configuration.md','w').write(c())\"")


def test_every_config_field_is_documented():
    import dataclasses

    for cls in [C.Config, C.NetConfig, *C.algo_configs().values()]:
        documented = {f[0] for f in fields_with_docs(cls)}
        names = {f.name for f in dataclasses.fields(cls)} - {"defaults"}
        assert names == documented, f"{cls.__name__}: undocumented {names - documented}"


def test_taxonomy_page_in_sync():
    from fluxrl.taxonomy import taxonomy_markdown

    assert (ROOT / "docs" / "taxonomy.md").read_text() == taxonomy_markdown(), (
        "regenerate: python -c \"from fluxrl.taxonomy import taxonomy_markdown as t; "
        "open('docs/taxonomy.md','w').write(t())\"")


def test_registered_algorithms_sit_in_their_cells():
    from fluxrl.agents import REGISTRY, get_algo
    from fluxrl.taxonomy import CELLS, GUIDANCE

    get_algo("sac")
    for name, info in REGISTRY.items():
        if info.family == "baseline":
            continue
        assert info.family in GUIDANCE
        assert name in CELLS.get((info.family, info.reference), []), name
