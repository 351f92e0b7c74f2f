"""The reference pages say what the code does: every magic and flag, every setting, and the site builds."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from nbmodels.ipython.config import ENVIRONMENT, NBModels
from tests.docs.magics_reference import MAGICS, render

REPO = Path(__file__).resolve().parents[2]
DOCS = REPO / "docs"


@pytest.mark.parametrize("name", MAGICS)
def test_magics_page_documents_each_magic_as_its_parser_reads_it(name: str) -> None:
    """docs/magics.md holds each magic's section exactly as rendered from its parser (usage, every flag)."""
    page = (DOCS / "magics.md").read_text(encoding="utf-8")
    assert render(name) in page, f"docs/magics.md is out of date for %{name}: python -m tests.docs.magics_reference"


def test_every_magic_the_extension_registers_has_a_section() -> None:
    from tests.docs.magics_reference import CLASSES

    registered = {name for cls in CLASSES for name in cls.magics["line"]}
    assert registered == set(MAGICS)


def test_configuration_page_lists_every_setting_with_its_variable_and_default() -> None:
    """One row per configurable trait: its %config name, its environment variable, and its real default."""
    page = (DOCS / "configuration.md").read_text(encoding="utf-8")
    rows = {
        m.group(1): (m.group(2), m.group(3))
        for m in re.finditer(r"^\| `NBModels\.(\w+)` \| `(\w+)` \| `([^`]*)` \|", page, flags=re.M)
    }
    traits = NBModels.class_traits(config=True)
    assert set(rows) == set(traits) == set(ENVIRONMENT)
    for name, (variable, shown) in rows.items():
        assert variable == ENVIRONMENT[name], name
        default = traits[name].default()
        if isinstance(default, bool):
            default = int(default)
        expected = str(default) if default != "" else '""'
        assert shown == expected, f"{name}: the page says {shown}, the code {default!r}"


@pytest.mark.slow
def test_the_site_builds_without_a_warning(tmp_path: Path) -> None:
    """``make docs``: ``mkdocs build --strict`` fails on a broken link, a page missing from the nav, or a
    docstring mkdocstrings cannot read."""
    mkdocs = Path(sys.executable).with_name("mkdocs")
    assert mkdocs.exists(), "the docs extra is not installed (pip install -e '.[docs]')"
    site = tmp_path / "site"
    done = subprocess.run(
        [str(mkdocs), "build", "--strict", "--site-dir", str(site)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=240,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert (site / "api" / "index.html").read_text(encoding="utf-8").count('id="nbmodels.ModelManager.') >= 10
    assert (site / "panel.png").exists()
    shutil.rmtree(site)


def test_every_page_is_in_the_site_navigation() -> None:
    nav = (REPO / "mkdocs.yml").read_text(encoding="utf-8")
    listed = set(re.findall(r":\s*([\w-]+\.md)\s*$", nav, flags=re.M))
    assert listed == {p.name for p in DOCS.glob("*.md")}
