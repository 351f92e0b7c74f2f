"""Every figure the README and docs/ quote is the one in the last stored benchmark run.

``make bench`` stores its run in ``benchmarks/stored-run.json``; ``make figures`` writes the stored
figures into the pages' marked quotes (``benchmarks.quoted``). A page that quotes a figure the
stored run did not measure, or a timing with no mark at all, fails here.
"""

from __future__ import annotations

import re

import pytest

from benchmarks.__main__ import discover
from benchmarks.quoted import MARKER, STORED_RUN, load_stored, malformed_markers, pages, problems, quotes_in

# A measured timing in prose: "43 ms", "0.41 µs". Targets ("≤ 150 ms") are not measured, and settings
# and examples are in code, which is left out.
TIMING = re.compile(r"(?<![\w.,≤≥])(?<![≤≥] )[0-9][0-9,]*(?:\.[0-9]+)?\s?(?:ms|µs)\b")
CODE = re.compile(r"^```.*?^```|`[^`\n]+`", re.MULTILINE | re.DOTALL)


def test_every_quoted_figure_is_the_stored_runs() -> None:
    stored = load_stored()
    quotes = [q for path in pages() for q in quotes_in(path)]
    assert len([q for q in quotes if not q.elsewhere]) >= 40, "the pages quote the stored run"
    assert problems(quotes, stored) == []


def test_no_marker_hides_a_figure_by_a_typo() -> None:
    assert [where for path in pages() for where in malformed_markers(path)] == []


def test_the_stored_run_has_every_benchmark_module_measured_in_full() -> None:
    stored = load_stored()
    assert stored["errors"] == {}, f"modules that failed in {STORED_RUN.name}"
    assert sorted(stored["modules"]) == sorted(discover()), "run `make bench` to store every module"
    assert [name for name, run in stored["modules"].items() if run["quick"]] == []


def unmarked_timings(text: str) -> list[str]:
    without_quotes = MARKER.sub("", text)
    prose = CODE.sub("", without_quotes)
    return [match.group() for match in TIMING.finditer(prose)]


@pytest.mark.parametrize("page", pages(), ids=lambda p: p.name)
def test_every_timing_a_page_states_is_a_marked_figure(page) -> None:  # type: ignore[no-untyped-def]
    assert unmarked_timings(page.read_text()) == []


def test_the_timing_check_sees_an_unmarked_figure_and_not_a_code_example() -> None:
    text = (
        "the report takes 43 ms, <!-- bench core: get() of a loaded model -->0.41 µs\n"
        "```\nIn [2]: %unload_model x\nunloaded x in 4.0 ms\n```\nand `timeout=5 ms` is a setting, ≤ 150 ms a target"
    )
    assert unmarked_timings(text) == ["43 ms"]
