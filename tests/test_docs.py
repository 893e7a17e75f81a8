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

    for cls in [C.Config, C.NetConfig, *C.ALGO_CONFIGS.values()]:
        documented = {f[0] for f in fields_with_docs(cls)}
        names = {f.name for f in dataclasses.fields(cls)} - {"defaults"}
        assert names == documented, f"{cls.__name__}: undocumented {names - documented}"
