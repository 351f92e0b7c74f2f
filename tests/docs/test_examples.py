"""Every example in README.md and docs/*.md runs, in a fresh real IPython shell per page, and prints what the
page shows (see tests/docs/examples.py for what runs and how outputs are compared)."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from IPython.core.interactiveshell import InteractiveShell
from traitlets.config import Config

from nbmodels import ModelManager, get_manager
from tests.docs.examples import Example, find_examples, matches, run_cell

REPO = Path(__file__).resolve().parents[2]
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
EXAMPLES = {page: find_examples(page) for page in PAGES}
RUN = [page for page in PAGES if any(not e.skip for e in EXAMPLES[page])]
SKIPPED = [e for page in PAGES for e in EXAMPLES[page] if e.skip]


@pytest.fixture
def shell(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[InteractiveShell]:
    """A new InteractiveShell and a new process-wide manager, in an empty working folder."""
    manager = ModelManager()
    monkeypatch.setattr(ModelManager, "_instance", manager)
    assert get_manager() is manager
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))  # a page may import a module it wrote in its folder
    modules = set(sys.modules)
    InteractiveShell.clear_instance()
    config = Config()
    config.HistoryManager.enabled = False  # each session numbers its cells from 1: no database to clash with
    ip = InteractiveShell.instance(config=config)
    ip.run_line_magic("colors", "nocolor")  # tracebacks in the failure message as plain text
    try:
        yield ip
    finally:
        if "nbmodels" in ip.extension_manager.loaded:
            ip.run_line_magic("unload_ext", "nbmodels")
        ip.run_line_magic("reset", "-f")
        manager.cleanup()
        InteractiveShell.clear_instance()
        for name in set(sys.modules) - modules:
            if str(getattr(sys.modules[name], "__file__", "") or "").startswith(str(tmp_path)):
                del sys.modules[name]
        if "nbmodels.core.runners" in sys.modules:  # a page that keeps a spare worker ready (isolation.md)
            from nbmodels.core.runners import spare_pool

            spare_pool().resize(0)


def _run(shell: InteractiveShell, example: Example) -> None:
    where = f"{example.page.relative_to(REPO)}, the block at line {example.line}"
    if example.setup.strip():
        output, ok = run_cell(shell, example.setup, hidden=True)
        assert ok, f"{where}: its hidden setup failed:\n{output}"
    if example.kind == "python":
        output, ok = run_cell(shell, example.body)
        assert ok, f"{where} raised:\n{output}"
        return
    for cell in example.cells():
        output, ok = run_cell(shell, cell.source, cell.number)
        expected = "\n".join(cell.expected)
        assert matches(cell.expected, output, example.loose), (
            f"{where}, In [{cell.number}]: {cell.source}\n--- the page shows:\n{expected}\n--- it printed:\n{output}"
        )


@pytest.mark.parametrize("page", RUN, ids=[str(p.relative_to(REPO)) for p in RUN])
def test_examples_of_a_page_run(page: Path, shell: InteractiveShell) -> None:
    """The page's examples, in order, in one shell: what one cell defines, the next may use."""
    for example in EXAMPLES[page]:
        if not example.skip:
            _run(shell, example)


@pytest.mark.parametrize("example", SKIPPED, ids=[e.id for e in SKIPPED])
def test_examples_that_cannot_run_here(example: Example) -> None:
    """Each block the page marks as not runnable here, counted as a skip with the page's reason."""
    assert not example.skip.startswith("("), f"{example.id}: {example.skip}"
    pytest.skip(f"{example.id}: {example.skip}")


def test_the_collector_finds_the_examples() -> None:
    """The README's tour is found as a session of eight cells, with its loose marker."""
    (tour,) = [e for e in EXAMPLES[REPO / "README.md"] if e.kind == "session" and not e.skip]
    assert [c.number for c in tour.cells()] == list(range(1, 9))
    assert tour.loose
    assert tour.cells()[3].expected[1].startswith("2 model(s) loaded")


def test_loose_matching_is_only_as_loose_as_marked() -> None:
    shown = ["clf: Sequential on cpu, 682 params, 2.7 KiB, loaded in 0.01s", "measured: RSS 300.1 MiB -> 200.0 MiB"]
    printed = "clf: Sequential on cpu, 682 params, 2.7 KiB, loaded in 1.25s\nmeasured: RSS 310.4 MiB -> 245.7 MiB\n"
    assert matches(shown, printed, loose=True)
    assert not matches(shown, printed, loose=False)
    assert not matches(shown, printed.replace("682", "683"), loose=True)  # a size is not a timing
    assert matches(["first", "...", "last"], "first\nmiddle\nmore\nlast\n", loose=False)
    assert matches(["took ... (... looking for holders)"], "took 9 ms (2 ms looking for holders)\n", loose=False)
    assert not matches(["a", "b"], "a\nb\nc\n", loose=False)  # nothing printed beyond what the page shows
    gc_pass = "took 214 ms, with a gc pass (11 ms looking for holders)\n"
    assert matches(["took 8.0 ms (7 ms looking for holders)"], gc_pass, loose=True)
