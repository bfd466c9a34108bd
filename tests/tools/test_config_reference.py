"""docs/config.md is drawn from the config tree and kept in step with it: a setting added, renamed
or given another default shows there, or this test fails with the command that redraws it."""

from conftest import REPO

from facepipe.tools.config_reference import reference


def test_docs_config_md_is_the_tree_as_it_is():
    assert (REPO / "docs" / "config.md").read_text() == reference(), (
        "docs/config.md is stale: python -m facepipe.tools.config_reference > docs/config.md"
    )


def test_every_setting_of_the_tree_is_in_it():
    from facepipe.config import leaf_defaults

    text = reference()
    assert all(f"| `{path}` |" in text for path, _ in leaf_defaults())
